"""The leaderboard: random reference and gain, flags, filters, sorting, exports, files."""
from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from distill_bench import cli
from distill_bench.leaderboard import (FLAGS, MIN_RUNS, build_leaderboard, export,
                                       write_leaderboard_files)
from distill_bench.results import ResultStore

STANDARD = {"name": "standard", "epochs": 1000, "num_eval_runs": 5}


def make_rows(method: str, accs: list[float], ipc: int = 1, shots="all",
              backbone: str = "convnet", protocol: str = "standard",
              protocol_config: dict | None = None, precision: str = "fp32",
              dataset: str = "cifar10-jpeg75", comparable: bool = True,
              paper_budget: bool = True, config_id: str = "c0", first_run: int = 0,
              data_checksum: str = "abc") -> list[dict]:
    """Result rows as the runner writes them (only the fields the leaderboard reads)."""
    return [{"method": method, "dataset": dataset, "ipc": ipc, "shots": str(shots),
             "backbone": backbone, "protocol": protocol, "precision": precision,
             "seed": 0, "run": run, "test_acc": acc, "distill_seconds": 1.0,
             "eval_seconds": 2.0, "comparable": comparable, "paper_budget": paper_budget,
             "config_id": config_id, "data_checksum": data_checksum,
             "protocol_config": protocol_config or dict(STANDARD)}
            for run, acc in enumerate(accs, first_run)]


def row_of(board: pd.DataFrame, **where) -> pd.Series:
    mask = pd.Series(True, index=board.index)
    for key, value in where.items():
        mask &= board[key].astype(str) == str(value)
    assert mask.sum() == 1, f"{mask.sum()} rows match {where}:\n{board}"
    return board[mask].iloc[0]


def test_gain_over_random_of_the_same_cell():
    rows = (make_rows("random", [20, 22, 20, 22, 21]) + make_rows("deepkkt", [30, 32, 31, 31, 31])
            + make_rows("random", [40, 40, 40, 40, 40], ipc=10)
            + make_rows("deepkkt", [45, 45, 45, 45, 45], ipc=10))
    board = build_leaderboard(rows)
    ipc1 = row_of(board, method="deepkkt", ipc=1)
    assert ipc1["random_acc"] == pytest.approx(21.0)
    assert ipc1["gain_over_random"] == pytest.approx(10.0)
    assert ipc1["acc_std"] == pytest.approx(pd.Series([30, 32, 31, 31, 31]).std(ddof=0), abs=0.01)
    assert row_of(board, method="deepkkt", ipc=10)["gain_over_random"] == pytest.approx(5.0)
    assert "few-runs" not in ipc1["flags"] and "no-random" not in ipc1["flags"]


def test_reference_never_crosses_backbone_protocol_or_precision():
    rows = (make_rows("random", [20] * 5) + make_rows("dm", [30] * 5, backbone="resnet18")
            + make_rows("dm", [30] * 5, precision="bf16")
            + make_rows("dm", [30] * 5, protocol="dc", protocol_config={"epochs": 300}))
    board = build_leaderboard(rows)
    for where in ({"backbone": "resnet18"}, {"precision": "bf16"}, {"protocol": "dc"}):
        row = row_of(board, method="dm", **where)
        assert pd.isna(row["random_acc"]) and "no-random" in row["flags"]


def test_same_protocol_name_with_other_epochs_is_another_cell():
    short = {**STANDARD, "epochs": 5}
    rows = (make_rows("random", [20] * 5) + make_rows("random", [10] * 5, protocol_config=short,
                                                      comparable=False)
            + make_rows("dc", [25] * 5, protocol_config=short, comparable=False))
    board = build_leaderboard(rows)
    assert len(board[board["method"] == "random"]) == 2  # not averaged together
    dc = row_of(board, method="dc")
    assert dc["random_acc"] == pytest.approx(10.0) and dc["epochs"] == 5
    assert "not-comparable" in dc["flags"]


def test_more_runs_of_the_same_recipe_join_one_cell():
    two = {**STANDARD, "num_eval_runs": 2}
    rows = make_rows("dm", [30, 32], protocol_config=two) + make_rows("dm", [31, 31, 31],
                                                                       first_run=2)
    (row,) = build_leaderboard(rows).itertuples()
    assert row.n_runs == 5 and row.acc_mean == 31.0
    # the same runs again (a rerun under a new protocol config) are not counted twice
    (row,) = build_leaderboard(rows + make_rows("dm", [30, 32])).itertuples()
    assert row.n_runs == 5


def test_other_data_files_never_mix():
    rows = (make_rows("random", [20] * 5) + make_rows("dm", [30] * 5, data_checksum="other")
            + make_rows("dm", [31] * 5))
    board = build_leaderboard(rows)
    assert len(board[board["method"] == "dm"]) == 2
    assert "no-random" in row_of(board, data_checksum="other")["flags"]


def test_zero_shot_row_uses_random_of_other_shots_and_says_so():
    rows = make_rows("random", [20] * 5, shots="all") + make_rows("deepkkt", [25] * 5, shots=0)
    row = row_of(build_leaderboard(rows), method="deepkkt")
    assert row["random_acc"] == pytest.approx(20.0) and row["gain_over_random"] == 5.0
    assert row["random_shots"] == "all" and "random-other-shots" in row["flags"]


def test_flags_for_few_runs_budget_protocol_and_jpeg():
    rows = (make_rows("mtt", [50] * (MIN_RUNS - 1), paper_budget=False, comparable=False)
            + make_rows("dc", [40] * MIN_RUNS, dataset="mnist"))
    board = build_leaderboard(rows)
    flags = row_of(board, method="mtt")["flags"].split(",")
    assert {"few-runs", "reduced-budget", "not-comparable", "jpeg-copy"} <= set(flags)
    assert set(row_of(board, method="dc")["flags"].split(",")) == {"no-random"}
    assert set(FLAGS) >= set(",".join(board["flags"]).split(","))  # every flag explained


def test_published_number_beside_comparable_rows_only():
    rows = (make_rows("mtt", [40] * 5) + make_rows("dm", [20] * 5, ipc=10, shots=10)
            + make_rows("dm", [20] * 5, ipc=10, shots=5)  # no paper has this cell
            + make_rows("mtt", [30] * 5, dataset="mnist")
            + make_rows("dc", [25] * 5, protocol="quick", comparable=False))
    board = build_leaderboard(rows)
    mtt = row_of(board, method="mtt", dataset="cifar10-jpeg75")
    assert (mtt["paper_acc"], mtt["paper_std"]) == (46.3, 0.8)  # the JPEG copy reads CIFAR-10's
    assert "CVPR 2022" in mtt["paper_source"]
    assert row_of(board, method="dm", shots=10)["paper_acc"] == 29.77  # DeepKKT, Table 2
    assert pd.isna(row_of(board, method="dm", shots=5)["paper_acc"])
    assert pd.isna(row_of(board, method="mtt", dataset="mnist")["paper_acc"])
    assert pd.isna(row_of(board, method="dc")["paper_acc"])        # quick: never compared
    shown = export(board, "markdown")
    assert "| paper |" in shown and "46.30 ± 0.80" in shown


def test_filters_keep_the_reference_and_reject_unknown_keys():
    rows = make_rows("random", [20] * 5) + make_rows("dm", [26] * 5) + make_rows(
        "dm", [36] * 5, ipc=10)
    board = build_leaderboard(rows, method="dm", ipc=[1])
    assert list(board["method"]) == ["dm"] and board.loc[0, "gain_over_random"] == 6.0
    assert build_leaderboard(rows, shots=["all"], dataset="cifar10-jpeg75").shape[0] == 3
    assert build_leaderboard(rows, dataset="mnist").empty
    with pytest.raises(ValueError, match="allowed"):
        build_leaderboard(rows, colour="red")


def test_sorting_defaults_best_first_and_takes_an_order():
    rows = (make_rows("random", [20] * 5) + make_rows("dc", [28] * 5)
            + make_rows("dm", [26] * 5) + make_rows("mtt", [46] * 5))
    assert list(build_leaderboard(rows)["method"]) == ["mtt", "dc", "dm", "random"]
    by_gain = build_leaderboard(rows, sort="gain_over_random:asc")
    assert list(by_gain["method"]) == ["random", "dm", "dc", "mtt"]
    assert list(build_leaderboard(rows, sort=["method"])["method"])[0] == "dc"
    assert list(build_leaderboard(rows, sort="gain")["method"]) == ["mtt", "dc", "dm", "random"]
    with pytest.raises(ValueError, match="cannot sort by 'speed'"):
        build_leaderboard(rows, sort="speed")
    with pytest.raises(ValueError, match="asc or desc"):
        build_leaderboard(rows, sort="acc_mean:up")


def test_exports_csv_markdown_latex():
    rows = make_rows("random", [20, 22] * 3) + make_rows("deepkkt_x", [30, 32] * 3)
    board = build_leaderboard(rows)
    back = pd.read_csv(io.StringIO(export(board, "csv")))
    assert set(back["method"]) == {"random", "deepkkt_x"} and "backbone" in back
    assert back["gain_over_random"].max() == pytest.approx(10.0)
    md = export(board, "markdown").splitlines()
    assert md[0].startswith("| method | dataset | ipc | shots | backbone |") and len(md) == 4
    assert "| 31.00 ± 1.00 | 6 | 21.00 ± 1.00 | +10.00 |" in md[2]
    assert "| ref |" in md[3]
    tex = export(board, "latex")
    assert "\\toprule" in tex and "deepkkt\\_x" in tex and "$\\pm$" in tex
    assert tex.count("\\\\") == 3  # header and two rows
    assert "config_id" in export(board, "markdown", full=True)
    with pytest.raises(ValueError, match="choose one of"):
        export(board, "html")


def test_empty_results():
    board = build_leaderboard([])
    assert board.empty and "backbone" in board.columns
    assert export(board, "markdown").startswith("| method")


def _store(tmp_path, rows) -> ResultStore:
    store = ResultStore(tmp_path / "results")
    for row in rows:
        store.append(row)
    return store


def test_write_leaderboard_files(tmp_path):
    rows = (make_rows("random", [20, 21, 22, 20, 21]) + make_rows("dm", [26, 27, 26, 27, 26])
            + make_rows("random", [30] * 5, ipc=10) + make_rows("dm", [40] * 5, ipc=10))
    store = _store(tmp_path, rows)
    written = write_leaderboard_files(store.dir, plots=True)
    names = sorted(p.name for p in written)
    assert names == ["README.md", "cifar10-jpeg75-accuracy.png",
                     "cifar10-jpeg75-accuracy.svg", "leaderboard.csv"]
    csv = pd.read_csv(store.dir / "leaderboard.csv")
    assert len(csv) == 4
    readme = (store.dir / "README.md").read_text()
    assert "## cifar10-jpeg75" in readme and "| dm | cifar10-jpeg75 | 10 |" in readme
    assert "(plots/cifar10-jpeg75-accuracy.png)" in readme
    for flag in FLAGS:
        assert f"`{flag}`" in readme
    assert "BatchNorm" in readme
    # a later write without plots (as `run` does) keeps linking the drawn figure
    write_leaderboard_files(store.dir, plots=False)
    assert "(plots/cifar10-jpeg75-accuracy.png)" in (store.dir / "README.md").read_text()


def test_cli_leaderboard_filters_sort_formats_and_write(tmp_path, capsys):
    rows = (make_rows("random", [20] * 5) + make_rows("dc", [28] * 5)
            + make_rows("dm", [26] * 5, backbone="resnet18"))
    store = _store(tmp_path, rows)
    assert cli.main(["leaderboard", "--results-dir", str(store.dir), "--format", "csv",
                     "--method", "dc,dm", "--sort", "acc_mean:asc"]) == 0
    out = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(out["method"]) == ["dm", "dc"] and list(out["backbone"]) == ["resnet18",
                                                                            "convnet"]
    assert cli.main(["leaderboard", "--results-dir", str(store.dir), "--format", "latex",
                     "--backbone", "convnet", "--write", "--no-plots"]) == 0
    assert "\\begin{tabular}" in capsys.readouterr().out
    assert (store.dir / "README.md").exists() and (store.dir / "leaderboard.csv").exists()
    assert not (store.dir / "plots").exists()
    assert cli.main(["leaderboard", "--results-dir", str(store.dir), "--sort", "x"]) == 2
    assert "cannot sort by 'x'" in capsys.readouterr().err


def test_rows_without_protocol_config_still_aggregate():
    rows = make_rows("random", [20] * 5)
    for row in rows:
        row.pop("protocol_config")
    board = build_leaderboard(json.loads(json.dumps(rows)))
    assert board.loc[0, "protocol_id"] == "standard" and board.loc[0, "n_runs"] == 5


# --- cross-architecture evaluation -----------------------------------------------------------

@pytest.mark.parametrize("backbone", ["convnet_bn", "resnet18"])
@pytest.mark.parametrize("batch_size", [10, 3])  # the whole ipc-1 set; batches 3, 3, 3, 1
def test_batchnorm_backbones_train_on_an_ipc1_set(backbone, batch_size):
    import torch
    from conftest import make_toy_dataset
    from distill_bench.evaluator import evaluate, get_protocol
    from distill_bench.synthetic import Preprocessing, SyntheticSet

    data = make_toy_dataset(num_classes=10, per_class=1, test_per_class=2, size=28)
    prep = Preprocessing(data.mean, data.std)
    syn = SyntheticSet(prep(data.train_images), data.train_labels, 10, data.name, prep)
    protocol = get_protocol("quick", epochs=2, num_eval_runs=1, batch_size=batch_size)
    (run,) = evaluate(syn, data, protocol, backbone, progress=False)
    assert 0 <= run.test_acc <= 100 and run.train_loss == run.train_loss  # not NaN
    assert torch.isfinite(torch.tensor(run.test_acc_per_class)).all()


def test_cli_cross_architecture_rows(tmp_path, monkeypatch, capsys):
    from tiny_data import tiny_env

    for key, value in tiny_env(tmp_path, train_per_class=2, test_per_class=3).items():
        monkeypatch.setenv(key, value)
    results = tmp_path / "results"
    assert cli.main(["run", "--method", "random", "--dataset", "mnist", "--ipc", "1",
                     "--backbone", "convnet,convnet_bn,resnet18", "--protocol", "quick",
                     "--epochs", "2", "--num-eval-runs", "1", "--results-dir", str(results),
                     "--no-progress"]) == 0
    assert len(list((results / "synthetic").glob("*.pt"))) == 1  # distilled once
    board = build_leaderboard(ResultStore(results).rows())
    assert sorted(board["backbone"]) == ["convnet", "convnet_bn", "resnet18"]
    assert (board["random_acc"] == board["acc_mean"]).all()  # each its own reference
    assert "| random | mnist | 1 | all | resnet18 | quick | 2 |" in capsys.readouterr().out


def test_distillation_time_is_shown_readably():
    from distill_bench.leaderboard import _duration

    assert [_duration(s) for s in (0.0, float("nan"), 42.4, 185.0, 9000.0)] == [
        "-", "-", "42 s", "3.1 min", "2.5 h"]
