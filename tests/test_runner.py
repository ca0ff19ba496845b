"""Cells end to end: the ``random`` baseline distilled, evaluated and stored, on real data.

Real-data runs use the ``quick`` protocol cut to a few epochs and a class-balanced slice of
each test split (``conftest.shrink_test``) so they fit a CPU test run; the training split,
checksum and statistics are the real ones.
"""
from __future__ import annotations

import json

import pytest
import torch

from baselines.random_subset import RandomSubset
from conftest import make_toy_dataset
from distill_bench import runner
from distill_bench.budget import real_subset
from distill_bench.method import RunContext, create_method
from distill_bench.runner import Cell, run_cell
from distill_bench.synthetic import SyntheticSet

PROVENANCE_FIELDS = ("config", "data_checksum", "versions", "git_revision", "hardware",
                     "eval_seconds", "distill_seconds")
ROW_FIELDS = ("method", "dataset", "ipc", "shots", "backbone", "protocol", "seed", "run",
              "test_acc", "run_key", "protocol_config", "comparable", "synthetic_set",
              "eval_options")


def _context(tmp_path) -> RunContext:
    return RunContext(torch.device("cpu"), tmp_path, progress=False)


# --- the random baseline ------------------------------------------------------------------

def test_random_draws_ipc_real_images_per_class_from_the_shots(tmp_path):
    data = make_toy_dataset(num_classes=3, per_class=6)
    real = real_subset(data, 4, seed=2)
    syn = create_method("random").distill(real, 3, seed=5, context=_context(tmp_path))
    assert torch.bincount(syn.syn_labels, minlength=3).tolist() == [3, 3, 3]
    picked = syn.provenance["train_indices"]
    assert set(picked) <= set(real.indices.tolist()), "only images the budget allows"
    torch.testing.assert_close(syn.syn_images, data.normalize(data.train_images[picked]))
    assert syn.syn_labels.tolist() == data.train_labels[picked].tolist()
    assert syn.provenance["method"] == "random" and syn.provenance["shots"] == 4
    again = RandomSubset().distill(real, 3, seed=5, context=_context(tmp_path))
    assert again.provenance["train_indices"] == picked


def test_random_needs_enough_shots(tmp_path):
    data = make_toy_dataset(num_classes=3, per_class=6)
    with pytest.raises(ValueError, match="ipc=3") as err:
        RandomSubset().distill(real_subset(data, 2, 0), 3, 0, _context(tmp_path))
    assert "shots >= 3" in str(err.value)
    with pytest.raises(ValueError, match="shots=0"):
        RandomSubset().distill(real_subset(data, 0, 0), 1, 0, _context(tmp_path))


@pytest.mark.parametrize("ipc", [0, -1, 1.5, True, "2"])
def test_cell_rejects_bad_ipc(ipc):
    with pytest.raises(ValueError, match="ipc="):
        Cell("random", "mnist", ipc)


def test_cell_rejects_bad_shots():
    with pytest.raises(ValueError, match="shots="):
        Cell("random", "mnist", 1, shots=-3)
    assert Cell("random", "mnist", 1, shots="7").shots == 7


# --- real data ----------------------------------------------------------------------------

def _check_rows(rows, cell, data, store_dir):
    stored = [json.loads(line) for line in (store_dir / "runs.jsonl").read_text().splitlines()]
    assert [r["run"] for r in rows] == list(range(cell.protocol_options["num_eval_runs"]))
    for row in rows:
        for key in PROVENANCE_FIELDS + ROW_FIELDS:
            assert key in row and row[key] is not None, key
        assert row["method"] == cell.method and row["dataset"] == cell.dataset
        assert row["ipc"] == cell.ipc and row["shots"] == "all" and row["protocol"] == "quick"
        assert row["eval_options"] == {"compile_model": False, "batched_runs": False}
        assert row["data_checksum"] == data.checksum
        assert row["comparable"] is False  # quick, and cut epochs
        assert row["protocol_config"]["epochs"] == cell.protocol_options["epochs"]
        assert row["versions"]["torch"] == torch.__version__
        assert row["hardware"]["device"] == "cpu" and row["git_revision"]
        assert row["eval_seconds"] > 0 and row["distill_seconds"] >= 0
        assert 0 <= row["test_acc"] <= 100 and row["num_syn"] == cell.ipc * data.num_classes
    assert [r["test_acc"] for r in stored] == [r["test_acc"] for r in rows]


@pytest.mark.slow
def test_random_on_mnist(small_mnist, mnist, tmp_path):
    cell = Cell("random", "mnist", 1, protocol="quick",
                protocol_options={"epochs": 20, "num_eval_runs": 2})
    rows = run_cell(cell, tmp_path, data=small_mnist, progress=False)
    _check_rows(rows, cell, small_mnist, tmp_path)
    assert rows[0]["data_checksum"] == mnist.checksum
    for row in rows:  # one real image per class already beats chance (10 %) by far
        assert row["test_acc"] > 30, row["test_acc"]

    syn = SyntheticSet.load(rows[0]["synthetic_set"])
    assert syn.syn_images.shape == (10, 1, 28, 28)
    picked = syn.provenance["train_indices"]
    torch.testing.assert_close(syn.syn_images, mnist.normalize(mnist.train_images[picked]))
    assert syn.provenance["distill_seconds"] == pytest.approx(rows[0]["distill_seconds"],
                                                              abs=0.01)


@pytest.mark.slow
def test_random_on_cifar10_jpeg(small_cifar10_jpeg, sha256sums, tmp_path):
    cell = Cell("random", "cifar10-jpeg75", 1, protocol="quick",
                protocol_options={"epochs": 20, "num_eval_runs": 2})
    rows = run_cell(cell, tmp_path, data=small_cifar10_jpeg, progress=False)
    _check_rows(rows, cell, small_cifar10_jpeg, tmp_path)
    assert rows[0]["data_checksum"] == sha256sums["cifar10-jpeg75.zip"]
    syn = SyntheticSet.load(rows[0]["synthetic_set"])
    assert syn.syn_images.shape == (10, 3, 32, 32) and syn.syn_labels.tolist() == list(range(10))


def test_a_bigger_budget_resumes_in_the_work_folder_of_a_smaller_one(small_mnist):
    cell = Cell("dm", "mnist", 1, shots=2)
    short, longer = create_method("dm", iterations=2), create_method("dm", iterations=4)
    assert runner.set_name(cell, short, small_mnist) != runner.set_name(cell, longer,
                                                                        small_mnist)
    assert runner.work_name(cell, short, small_mnist) == runner.work_name(cell, longer,
                                                                          small_mnist)
    other = create_method("dm", iterations=2, lr_img=0.5)  # not extendable: own folder
    assert runner.work_name(cell, other, small_mnist) != runner.work_name(cell, short,
                                                                          small_mnist)


def test_resume_redoes_nothing_or_only_missing_runs(small_mnist, tmp_path, monkeypatch):
    cell = Cell("random", "mnist", 2, backbone="mlp", protocol="quick",
                protocol_options={"epochs": 5, "num_eval_runs": 3})
    first = run_cell(cell, tmp_path, data=small_mnist, progress=False)
    assert [r["run"] for r in first] == [0, 1, 2]

    # everything done: no distillation, no training, no new rows
    def forbidden(*args, **kwargs):
        raise AssertionError("a finished cell was recomputed")
    monkeypatch.setattr(RandomSubset, "distill", forbidden)
    monkeypatch.setattr(runner, "evaluate", forbidden)
    assert run_cell(cell, tmp_path, data=small_mnist, progress=False) == []
    runs_file = tmp_path / "runs.jsonl"
    assert len(runs_file.read_text().splitlines()) == 3

    # lose run 1's row: only run 1 is redone, from the saved synthetic set
    lines = runs_file.read_text().splitlines()
    runs_file.write_text("\n".join(l for l in lines if json.loads(l)["run"] != 1) + "\n")
    monkeypatch.undo()
    monkeypatch.setattr(RandomSubset, "distill", forbidden)
    asked = []
    real_evaluate = runner.evaluate

    def spy(syn, data, protocol, backbone, seed, runs, *args, **kwargs):
        asked.append(list(runs))
        return real_evaluate(syn, data, protocol, backbone, seed, runs, *args, **kwargs)
    monkeypatch.setattr(runner, "evaluate", spy)
    redone = run_cell(cell, tmp_path, data=small_mnist, progress=False)
    assert asked == [[1]] and [r["run"] for r in redone] == [1]
    assert redone[0]["test_acc"] == first[1]["test_acc"], "a redone run reproduces itself"
    stored = [json.loads(l) for l in runs_file.read_text().splitlines()]
    assert sorted(r["run"] for r in stored) == [0, 1, 2]

    # a different protocol is a different cell: its runs are not taken as done
    monkeypatch.undo()
    other = Cell("random", "mnist", 2, backbone="mlp", protocol="quick",
                 protocol_options={"epochs": 4, "num_eval_runs": 1})
    assert [r["run"] for r in run_cell(other, tmp_path, data=small_mnist, progress=False)] == [0]
