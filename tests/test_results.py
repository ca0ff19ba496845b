"""The append-only results store: rows survive, writes are atomic, bad lines are located."""
from __future__ import annotations

import json

import pytest

from distill_bench.results import ResultStore, config_hash, get_results_dir


def test_append_keeps_earlier_rows(tmp_path):
    store = ResultStore(tmp_path / "results")
    assert store.rows() == []
    for run in range(3):
        store.append({"method": "random", "run": run, "run_key": "k1", "test_acc": 10.0 + run})
    store.append({"method": "random", "run": 0, "run_key": "k2", "test_acc": 50.0})
    rows = ResultStore(tmp_path / "results").rows()  # a fresh reader sees all of them
    assert [r["test_acc"] for r in rows] == [10.0, 11.0, 12.0, 50.0]
    assert store.done_runs("k1") == {0, 1, 2} and store.done_runs("k2") == {0}
    assert store.done_runs("other") == set()
    lines = store.path.read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(line) for line in lines)


def test_append_is_atomic_and_leaves_no_temporary_files(tmp_path):
    store = ResultStore(tmp_path)
    store.append({"a": 1})
    store.append({"a": 2})
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    assert {p.name for p in tmp_path.iterdir()} <= {"runs.jsonl", ".runs.lock"}


def test_append_after_a_line_without_newline(tmp_path):
    store = ResultStore(tmp_path)
    store.path.write_text(json.dumps({"a": 1}))  # e.g. edited by hand
    store.append({"a": 2})
    assert [r["a"] for r in store.rows()] == [1, 2]


def test_corrupt_line_names_its_number(tmp_path):
    store = ResultStore(tmp_path)
    store.append({"a": 1})
    with open(store.path, "a") as f:
        f.write("\n{not json\n")
    store.append({"a": 3})
    with pytest.raises(ValueError) as err:
        store.rows()
    assert f"{store.path}:3 " in str(err.value)  # line 2 is blank, line 3 is broken


def test_values_that_json_cannot_hold_are_written_as_text(tmp_path):
    store = ResultStore(tmp_path)
    store.append({"path": tmp_path, "nan": float("nan")})
    row = store.rows()[0]
    assert row["path"] == str(tmp_path)


def test_config_hash_is_stable_and_order_free():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    assert len(config_hash({})) == 12


def test_results_dir_from_argument_or_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_BENCH_RESULTS", str(tmp_path / "env"))
    assert get_results_dir() == tmp_path / "env" and (tmp_path / "env").is_dir()
    assert get_results_dir(tmp_path / "arg") == tmp_path / "arg"


def test_a_crash_while_writing_leaves_the_old_rows_intact(tmp_path, monkeypatch):
    import os

    store = ResultStore(tmp_path)
    store.append({"a": 1})
    before = store.path.read_bytes()

    def crash(fd):
        raise OSError("disk full")
    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        store.append({"a": 2})
    assert store.path.read_bytes() == before and [r["a"] for r in store.rows()] == [1]
