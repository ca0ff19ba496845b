"""Plots: accuracy against ipc (PNG and SVG) and image grids of synthetic sets."""
from __future__ import annotations

import matplotlib.image
import pytest
import torch

from distill_bench import cli
from distill_bench.plots import accuracy_table, plot_accuracy, plot_grid, to_pixels
from distill_bench.results import ResultStore
from distill_bench.synthetic import Preprocessing, SyntheticSet
from test_leaderboard import make_rows


def grid_rows() -> list[dict]:
    rows = []
    for ipc, base in ((1, 14.0), (10, 26.0)):
        rows += make_rows("random", [base - 1, base + 1], ipc=ipc)
        rows += make_rows("dm", [base + 10, base + 12], ipc=ipc)
        rows += make_rows("deepkkt", [base + 5] * 2, ipc=ipc, shots=0)
        rows += make_rows("deepkkt", [base + 15] * 2, ipc=ipc, shots=ipc)
        rows += make_rows("dm", [99.0], ipc=ipc, backbone="resnet18")  # another figure
    return rows


def test_accuracy_table_groups_runs_and_picks_one_setting():
    table, chosen = accuracy_table(grid_rows(), "cifar10-jpeg75")
    assert chosen == {"backbone": "convnet", "protocol": "standard", "precision": "fp32",
                      "comparable": True}
    dm1 = table[(table["method"] == "dm") & (table["ipc"] == 1)].iloc[0]
    assert (dm1["acc_mean"], dm1["acc_std"], dm1["n_runs"]) == (25.0, 1.0, 2)
    assert set(table[table["method"] == "deepkkt"]["shots"]) == {"0", "ipc"}
    table, _ = accuracy_table(grid_rows(), "cifar10-jpeg75", backbone="resnet18")
    assert list(table["acc_mean"]) == [99.0, 99.0]
    with pytest.raises(ValueError, match="present: \\['convnet', 'resnet18'\\]"):
        accuracy_table(grid_rows(), "cifar10-jpeg75", backbone="vgg11")
    with pytest.raises(ValueError, match="no results for dataset 'svhn'"):
        accuracy_table(grid_rows(), "svhn")


def test_plot_accuracy_writes_png_and_svg_with_references(tmp_path):
    rows = grid_rows() + make_rows("whole", [84.0, 85.0], ipc=5000)
    paths = plot_accuracy(rows, "cifar10-jpeg75", tmp_path / "acc")
    assert [p.name for p in paths] == ["acc.png", "acc.svg"]
    png = matplotlib.image.imread(paths[0])
    assert png.shape[0] > 300 and png.shape[1] > 400 and png[..., :3].std() > 0.05
    svg = paths[1].read_text()
    for text in ("random real subset", "whole training set (84.5)", "deepkkt (shots 0)",
                 "deepkkt (shots = ipc)", "images per class (ipc)", "protocol standard"):
        assert text in svg, text
    assert ">5000<" not in svg  # the whole-set row is a line, not an ipc tick
    given = plot_accuracy(grid_rows(), "cifar10-jpeg75", tmp_path / "given.png", whole=80.0)
    assert given[0].name == "given.png" and "whole training set (80.0)" in given[1].read_text()
    no_whole = plot_accuracy(grid_rows(), "cifar10-jpeg75", tmp_path / "none")
    assert "whole training set" not in no_whole[1].read_text()


def test_regenerated_figures_are_byte_identical(tmp_path):
    """leaderboard --write must not churn committed figures whose data did not change."""
    first = [p.read_bytes() for p in plot_accuracy(grid_rows(), "cifar10-jpeg75",
                                                   tmp_path / "a")]
    again = [p.read_bytes() for p in plot_accuracy(grid_rows(), "cifar10-jpeg75",
                                                   tmp_path / "a")]
    assert first == again


def test_plot_of_a_non_comparable_protocol_says_so(tmp_path):
    rows = make_rows("random", [10.0, 12.0], protocol="quick", comparable=False)
    svg = plot_accuracy(rows, "cifar10-jpeg75", tmp_path / "q")[1].read_text()
    assert "NOT comparable" in svg


def _zca(dim: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, dim, generator=gen)
    mean = x.mean(0)
    cov = (x - mean).T @ (x - mean) / len(x)
    vals, vecs = torch.linalg.eigh(cov)
    return {"mean": mean, "transform": vecs @ torch.diag((vals + 0.1).rsqrt()) @ vecs.T}


@pytest.mark.parametrize("zca", [False, True])
def test_to_pixels_undoes_the_preprocessing(zca):
    pixels = torch.randint(0, 256, (4, 3, 6, 6), dtype=torch.uint8)
    prep = Preprocessing((0.5, 0.4, 0.3), (0.2, 0.25, 0.3), _zca(3 * 36) if zca else None)
    back = to_pixels(prep(pixels), prep)
    assert torch.allclose(back, pixels.float() / 255, atol=1e-4)


def _set(channels: int = 1, ipc: int = 3, classes: int = 4, soft: bool = False):
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(classes * ipc, channels, 8, 8, generator=gen)
    labels = torch.arange(classes).repeat_interleave(ipc)
    if soft:
        labels = torch.nn.functional.one_hot(labels, classes).float() * 0.8 + 0.05
    prep = Preprocessing((0.5,) * channels, (0.25,) * channels)
    return SyntheticSet(images, labels, classes, "mnist", prep, provenance={"method": "dm"})


def test_plot_grid_one_row_per_class(tmp_path):
    small = plot_grid(_set(classes=2), tmp_path / "two")
    tall = plot_grid(_set(classes=6), tmp_path / "six.png", classes=list("abcdef"))
    assert small.name == "two.png" and tall.name == "six.png"
    h2 = matplotlib.image.imread(small).shape[0]
    h6 = matplotlib.image.imread(tall).shape[0]
    assert h6 > 2 * h2  # rows grow with classes
    narrow = plot_grid(_set(channels=3, ipc=5, soft=True), tmp_path / "c.svg", max_per_class=2)
    assert narrow.suffix == ".svg" and narrow.stat().st_size > 0
    with pytest.raises(ValueError, match="max_per_class=0"):
        plot_grid(_set(), tmp_path / "x", max_per_class=0)


def test_cli_plot_accuracy_and_grid(tmp_path, capsys):
    store = ResultStore(tmp_path / "results")
    for row in grid_rows():
        store.append(row)
    assert cli.main(["plot", "accuracy", "--dataset", "cifar10-jpeg75", "--whole", "84.8",
                     "--results-dir", str(store.dir)]) == 0
    printed = capsys.readouterr().out.split()
    assert [p.rsplit("/", 1)[-1] for p in printed] == ["cifar10-jpeg75-accuracy.png",
                                                       "cifar10-jpeg75-accuracy.svg"]
    path = _set().save(tmp_path / "set.pt")
    assert cli.main(["plot", "grid", str(path), "--data-root", str(tmp_path / "none")]) == 0
    assert (tmp_path / "set.png").exists()
    assert cli.main(["plot", "accuracy", "--dataset", "svhn",
                     "--results-dir", str(store.dir)]) == 2
    assert "no results for dataset 'svhn'" in capsys.readouterr().err


def test_one_protocol_setting_and_one_config_per_cell():
    short = {"name": "standard", "epochs": 5, "num_eval_runs": 5}
    rows = (make_rows("dm", [30.0] * 5) + make_rows("dm", [10.0] * 2, protocol_config=short)
            + make_rows("dm", [50.0] * 2, config_id="other")
            + make_rows("whole", [84.0], protocol="own-recipe"))
    table, chosen = accuracy_table(rows, "cifar10-jpeg75")
    assert chosen["protocol"] == "standard"
    dm = table[table["method"] == "dm"]
    assert list(dm["acc_mean"]) == [30.0] and list(dm["n_runs"]) == [5]
    assert list(table[table["method"] == "whole"]["acc_mean"]) == [84.0]
