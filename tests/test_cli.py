"""``distill-bench`` through ``main([...])``: list, run, leaderboard, evaluate, and errors.

Runs use the ``mlp`` backbone, one or two epochs and one evaluation run, so the whole
command line is exercised on real MNIST in seconds.
"""
from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from distill_bench.cli import main

TINY = ["--protocol", "quick", "--epochs", "2", "--num-eval-runs", "1", "--backbone", "mlp",
        "--no-progress"]
LEADERBOARD_COLUMNS = ["method", "dataset", "ipc", "shots", "backbone", "protocol",
                       "n_runs", "acc_mean", "acc_std"]


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data_root):
    """One tiny ``run`` of random on MNIST at ipc 1 and 2; its results folder and output."""
    results = tmp_path_factory.mktemp("cli-results")
    code = main(["run", "--method", "random", "--dataset", "mnist", "--ipc", "1,2",
                 "--data-root", str(data_root), "--results-dir", str(results), *TINY])
    assert code == 0
    return results


def test_list_shows_every_section(capsys):
    code, out, _ = _run(capsys, "list")
    assert code == 0
    for section in ("methods:", "datasets:", "backbones:", "protocols:"):
        assert section in out
    for name in ("random", "mnist", "cifar10-jpeg75", "convnet", "resnet18", "standard"):
        assert f"  {name} " in out
    quick = next(line for line in out.splitlines() if line.strip().startswith("quick"))
    assert "NOT COMPARABLE" in quick
    jpeg = next(line for line in out.splitlines() if line.strip().startswith("cifar10-jpeg75"))
    assert "lossy" in jpeg


def test_list_one_section_with_wildcard(capsys):
    code, out, _ = _run(capsys, "list", "backbones", "--pattern", "convnet*")
    assert code == 0 and "datasets:" not in out
    names = [line.split()[0] for line in out.splitlines()[1:]]
    assert names and all(n.startswith("convnet") for n in names)


def test_run_writes_one_row_per_run(finished_run):
    rows = [json.loads(l) for l in (finished_run / "runs.jsonl").read_text().splitlines()]
    assert sorted((r["ipc"], r["run"]) for r in rows) == [(1, 0), (2, 0)]
    assert all(r["protocol"] == "quick" and r["comparable"] is False for r in rows)
    assert all(r["backbone"] == "mlp" and r["dataset"] == "mnist" for r in rows)
    assert (finished_run / "leaderboard.csv").is_file()


def test_run_again_is_resumed_without_new_rows(finished_run, data_root, capsys):
    code, out, _ = _run(capsys, "run", "--method", "random", "--dataset", "mnist", "--ipc",
                        "1,2", "--data-root", str(data_root), "--results-dir",
                        str(finished_run), *TINY)
    assert code == 0 and "run=0" not in out  # nothing recomputed
    assert len((finished_run / "runs.jsonl").read_text().splitlines()) == 2


def test_leaderboard_csv(finished_run, capsys):
    code, out, _ = _run(capsys, "leaderboard", "--format", "csv", "--results-dir",
                        str(finished_run))
    assert code == 0
    board = pd.read_csv(io.StringIO(out))
    for column in LEADERBOARD_COLUMNS:
        assert column in board.columns, column
    rows = [json.loads(l) for l in (finished_run / "runs.jsonl").read_text().splitlines()]
    assert len(board) == 2 and board["n_runs"].tolist() == [1, 1]
    for _, line in board.iterrows():
        acc = next(r["test_acc"] for r in rows if r["ipc"] == line["ipc"])
        assert line["acc_mean"] == pytest.approx(acc, abs=0.01)
        assert line["method"] == "random" and str(line["shots"]) == "all"


def test_leaderboard_markdown_to_file(finished_run, tmp_path, capsys):
    target = tmp_path / "board.md"
    code, out, _ = _run(capsys, "leaderboard", "--format", "markdown", "--results-dir",
                        str(finished_run), "--output", str(target))
    assert code == 0
    lines = out.strip().splitlines()
    assert all(line.startswith("|") for line in lines)
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    for column in ("method", "dataset", "ipc", "shots", "backbone", "protocol"):
        assert column in header, column
    rows = [json.loads(l) for l in (finished_run / "runs.jsonl").read_text().splitlines()]
    body = [line for line in lines[2:] if "random" in line]
    assert len(body) == 2
    for row in rows:  # each cell's accuracy is shown (to two decimals)
        assert any(f"{row['test_acc']:.2f}" in line for line in body), row["test_acc"]
    assert target.read_text() == out


def test_evaluate_a_saved_set(finished_run, data_root, capsys):
    saved = sorted((finished_run / "synthetic").glob("random-mnist-ipc1-*.pt"))
    assert len(saved) == 1
    code, out, _ = _run(capsys, "evaluate", str(saved[0]), "--data-root", str(data_root),
                        "--protocol", "quick", "--epochs", "1", "--num-eval-runs", "2",
                        "--backbone", "mlp", "--no-progress")
    assert code == 0
    assert str(saved[0]) in out and "over 2 runs" in out and "quick" in out


def test_unknown_method_fails_before_any_work(data_root, tmp_path, capsys):
    code, out, err = _run(capsys, "run", "--method", "random,randmo", "--dataset", "mnist",
                          "--data-root", str(data_root), "--results-dir", str(tmp_path),
                          *TINY)
    assert code == 2
    assert "unknown method 'randmo'" in err and "Did you mean 'random'?" in err
    assert "Known methods:" in err and "random" in err.split("Known methods:")[1]
    assert not (tmp_path / "runs.jsonl").exists(), "the valid method ran before the error"


@pytest.mark.parametrize("shots", ["-1", "lots", "2.5"])
def test_bad_shots(data_root, tmp_path, capsys, shots):
    code, _, err = _run(capsys, "run", "--method", "random", "--dataset", "mnist",
                        "--shots", shots, "--data-root", str(data_root),
                        "--results-dir", str(tmp_path), *TINY)
    assert code == 2 and "shots=" in err and shots in err and "'all'" in err


def test_bad_ipc(data_root, tmp_path, capsys):
    code, _, err = _run(capsys, "run", "--method", "random", "--dataset", "mnist",
                        "--ipc", "1,0", "--data-root", str(data_root),
                        "--results-dir", str(tmp_path), *TINY)
    assert code == 2 and "ipc=0" in err
    assert not (tmp_path / "runs.jsonl").exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--method", "random", "--ipc", "one"])
    assert exit_info.value.code == 2
    assert "expected integers" in capsys.readouterr().err


def test_more_shots_than_images_is_a_clean_error(data_root, tmp_path, capsys):
    code, _, err = _run(capsys, "run", "--method", "random", "--dataset", "mnist",
                        "--shots", "100000", "--data-root", str(data_root),
                        "--results-dir", str(tmp_path), *TINY)
    assert code == 2 and "shots=100000" in err


def test_missing_data_and_files_are_clean_errors(tmp_path, tmp_cache, capsys):
    code, _, err = _run(capsys, "run", "--method", "random", "--dataset", "mnist",
                        "--data-root", str(tmp_path / "empty"), "--results-dir",
                        str(tmp_path / "r"), *TINY)
    assert code == 2 and str(tmp_path / "empty") in err and "DISTILL_BENCH_DATA" in err
    code, _, err = _run(capsys, "run", "--method", "random", "--dataset", "mnits",
                        "--data-root", str(tmp_path), "--results-dir", str(tmp_path / "r"))
    assert code == 2 and "Did you mean 'mnist'?" in err
    code, _, err = _run(capsys, "evaluate", str(tmp_path / "absent.pt"))
    assert code == 2 and "absent.pt" in err


def test_evaluate_defaults_are_the_documented_ones():
    """Sub-commands share option definitions; one's defaults must not leak into another's."""
    from distill_bench.cli import build_parser

    args = build_parser().parse_args(["evaluate", "set.pt"])
    assert args.protocol == "standard" and args.precision == "fp32"
    assert args.backbone == "convnet" and args.seed == 0


def test_impossible_shots_fail_before_any_data_is_read(tmp_path, monkeypatch, capsys):
    """random at ipc 10 from shots 5 cannot work: say so at once, naming the values."""
    from distill_bench.method import create_method

    assert create_method("dm", init="noise").needs_real == "some"  # noise needs one
    with pytest.raises(ValueError, match="shots=0 gives none"):
        create_method("dm", init="noise").check_cell(10, 0)
    create_method("dm", init="noise").check_cell(10, 1)
    def no_data(*args, **kwargs):
        raise AssertionError("the dataset was loaded before the budget was checked")
    monkeypatch.setattr("distill_bench.data.load_dataset", no_data)
    for method, shots, expected in (("random", "5", "shots=5 allows 5; use shots >= 10"),
                                    ("dm", "0", "shots=0 allows 0; use shots >= 10")):
        assert main(["run", "--method", method, "--ipc", "10", "--shots", shots,
                     "--results-dir", str(tmp_path)]) == 2
        assert expected in capsys.readouterr().err
