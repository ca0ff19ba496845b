"""Pictures of results: accuracy against ipc, and image grids of synthetic sets.

``plot_accuracy`` draws, for one dataset, test accuracy (mean ± std over evaluation runs)
against images per class for each method, with the random real subset as a dashed
reference and the whole-training-set accuracy as a horizontal line (from rows of a
``whole`` reference, or a value given). ``plot_grid`` shows a saved ``SyntheticSet``, one
row per class, with its preprocessing (ZCA, normalisation) undone so pixels are viewable.

matplotlib runs on the Agg backend: no display is needed.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from distill_bench.synthetic import Preprocessing, SyntheticSet  # noqa: E402

logger = logging.getLogger(__name__)

WHOLE_METHOD = "whole"          # rows of a network trained on the whole training split
RANDOM_METHOD = "random"
FIGURE_FORMATS = ("png", "svg")
MAX_GRID_COLUMNS = 10           # images per class shown in a grid by default


def _pick(frame: pd.DataFrame, column: str, wanted: str | None, prefer: str | None) -> str:
    """The value of ``column`` to plot: ``wanted``, else ``prefer`` if present, else the
    most frequent one (logged, since the figure then shows a subset of the rows)."""
    present = Counter(frame[column].astype(str))
    if wanted is not None:
        if wanted not in present:
            raise ValueError(f"no rows with {column}={wanted!r}; present: {sorted(present)}")
        return wanted
    if prefer in present:
        return prefer
    choice = present.most_common(1)[0][0]
    if len(present) > 1:
        logger.info("plotting %s=%s (also present: %s)", column, choice,
                    sorted(set(present) - {choice}))
    return choice


def accuracy_table(rows: list[dict], dataset: str, backbone: str | None = None,
                   protocol: str | None = None, precision: str | None = None
                   ) -> tuple[pd.DataFrame, dict]:
    """Mean, std and count of test accuracy per (method, shots, ipc) for one dataset;
    ``shots`` reads ``"ipc"`` where it equals the row's ipc (the few-shot setting).

    Cells come from the leaderboard (duplicates removed, protocols told apart by their
    settings). One backbone, protocol and precision are drawn; where a method has several
    configs (or protocol settings) in a cell, the one with the most runs is drawn.
    Rows of the ``whole`` reference are kept for any protocol (they train on the whole
    training split with their own recipe). Returns the table and the chosen settings.
    """
    from distill_bench.leaderboard import build_leaderboard

    board = build_leaderboard(rows, dataset=dataset)
    if board.empty:
        known = sorted({r["dataset"] for r in rows})
        raise ValueError(f"no results for dataset {dataset!r}; datasets with results: {known}")
    chosen = {"backbone": _pick(board, "backbone", backbone, "convnet")}
    board = board[board["backbone"] == chosen["backbone"]]
    whole = board[board["method"] == WHOLE_METHOD]
    board = board[board["method"] != WHOLE_METHOD]
    for column, wanted, prefer in (("protocol", protocol, "standard"),
                                   ("precision", precision, "fp32")):
        chosen[column] = _pick(board, column, wanted, prefer)
        board = board[board[column].astype(str) == chosen[column]]
    board = board[board["protocol_id"] == _pick(board, "protocol_id", None, None)]
    chosen["comparable"] = bool(board["comparable"].all())

    table = pd.concat([board, whole])
    # few-shot rows with shots == ipc form one line across ipc values
    same = table["shots"] == table["ipc"].astype(str)
    table = table.assign(shots=table["shots"].where(~same, "ipc"))
    table = table.sort_values("n_runs", ascending=False, kind="stable")
    table = table.drop_duplicates(["method", "shots", "ipc"])  # most runs per cell
    columns = ["method", "shots", "ipc", "acc_mean", "acc_std", "n_runs"]
    return table[columns].sort_values(["method", "shots", "ipc"]).reset_index(drop=True), chosen


def plot_accuracy(rows: list[dict], dataset: str, output: str | os.PathLike,
                  whole: float | None = None, backbone: str | None = None,
                  protocol: str | None = None, precision: str | None = None) -> list[Path]:
    """Test accuracy against ipc per method (error bars: std over runs); writes
    ``<output>.png`` and ``<output>.svg`` and returns their paths.

    Args:
        whole: accuracy (%) of training on the whole training split; default: the mean of
            ``whole`` rows of this dataset, if any (no line otherwise).
    """
    table, chosen = accuracy_table(rows, dataset, backbone, protocol, precision)
    methods = table[~table["method"].isin([WHOLE_METHOD, RANDOM_METHOD])]
    random = table[table["method"] == RANDOM_METHOD]
    whole_rows = table[table["method"] == WHOLE_METHOD]
    if whole is None and not whole_rows.empty:
        whole = float((whole_rows["acc_mean"] * whole_rows["n_runs"]).sum()
                      / whole_rows["n_runs"].sum())

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    # one line per (method, shots); shots in the label when a method has several
    for (method, shots), group in methods.groupby(["method", "shots"], sort=True):
        several = methods[methods["method"] == method]["shots"].nunique() > 1
        label = f"{method} (shots{' = ' if shots == 'ipc' else ' '}{shots})" if several \
            else method
        ax.errorbar(group["ipc"], group["acc_mean"], yerr=group["acc_std"], marker="o",
                    capsize=3, label=label)
    # random real subsets of every shots pooled: the same distribution when shots >= ipc
    if not random.empty:
        pooled = random.groupby("ipc").apply(_pool, include_groups=False).reset_index()
        ax.errorbar(pooled["ipc"], pooled["acc_mean"], yerr=pooled["acc_std"], color="0.4",
                    linestyle="--", marker="s", capsize=3, label="random real subset")
    if whole is not None:
        ax.axhline(whole, color="black", linestyle=":", label=f"whole training set ({whole:.1f})")

    ipcs = sorted(set(table[table["method"] != WHOLE_METHOD]["ipc"]))
    ax.set_xscale("log")
    ax.set_xticks(ipcs, [str(i) for i in ipcs])
    ax.minorticks_off()
    ax.set_xlabel("images per class (ipc)")
    ax.set_ylabel("test accuracy (%)")
    title = f"{dataset}: {chosen['backbone']}, protocol {chosen['protocol']}"
    if chosen["precision"] != "fp32":
        title += f", {chosen['precision']}"
    if not chosen["comparable"]:
        title += " (NOT comparable)"
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    paths = _save(fig, Path(output))
    plt.close(fig)
    return paths


def _pool(group: pd.DataFrame) -> pd.Series:
    """Mean and std of runs pooled over groups of (mean, std, n) statistics."""
    n = group["n_runs"].sum()
    mean = (group["acc_mean"] * group["n_runs"]).sum() / n
    second = ((group["acc_std"] ** 2 + group["acc_mean"] ** 2) * group["n_runs"]).sum() / n
    return pd.Series({"acc_mean": mean, "acc_std": max(second - mean ** 2, 0.0) ** 0.5,
                      "n_runs": n})


_STABLE_METADATA = {"svg": {"Date": None}, "png": {"Software": None}}


def _save(fig, stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    if stem.suffix.lstrip(".") in FIGURE_FORMATS:
        stem = stem.with_suffix("")
    paths = []
    for fmt in FIGURE_FORMATS:
        path = stem.with_name(f"{stem.name}.{fmt}")
        # SVG text stays searchable text; no date and fixed ids, so that regenerating an
        # unchanged figure leaves the file byte-identical
        with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "distill_bench"}):
            fig.savefig(path, dpi=150, metadata=_STABLE_METADATA.get(fmt))
        paths.append(path)
    return paths


def to_pixels(images: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """Undo ``preprocessing``: (N, C, H, W) in its space -> pixels in [0, 1]."""
    x = images.detach().float().cpu()
    if preprocessing.zca is not None:
        # forward: white = (flat - mean) @ T^T, so flat = white @ pinv(T^T) + mean
        shape = x.shape
        inverse = torch.linalg.pinv(preprocessing.zca["transform"].T.float())
        x = (x.flatten(1) @ inverse + preprocessing.zca["mean"]).view(shape)
    mean = torch.tensor(preprocessing.mean).view(1, -1, 1, 1)
    std = torch.tensor(preprocessing.std).view(1, -1, 1, 1)
    return (x * std + mean).clamp(0, 1)


def plot_grid(syn: SyntheticSet | str | os.PathLike, output: str | os.PathLike,
              classes: list[str] | None = None,
              max_per_class: int = MAX_GRID_COLUMNS) -> Path:
    """An image grid of a synthetic set: one row per class, up to ``max_per_class``
    columns; soft labels are shown by their argmax. Returns the written file
    (``.png`` unless ``output`` ends in ``.svg``)."""
    if not isinstance(syn, SyntheticSet):
        syn = SyntheticSet.load(syn)
    if max_per_class < 1:
        raise ValueError(f"max_per_class={max_per_class}: show at least 1 image per class")
    pixels = to_pixels(syn.syn_images, syn.preprocessing)
    labels = syn.hard_labels
    cols = min(max_per_class, syn.ipc)
    rows = syn.num_classes
    fig, axes = plt.subplots(rows, cols, figsize=(0.9 * cols + 1.2, 0.9 * rows + 0.5),
                             squeeze=False)
    for c in range(rows):
        picked = (labels == c).nonzero().flatten()[:cols]
        for j in range(cols):
            ax = axes[c][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(picked):
                image = pixels[picked[j]].permute(1, 2, 0).numpy()
                gray = image.shape[2] == 1
                ax.imshow(image[..., 0] if gray else image, cmap="gray" if gray else None,
                          vmin=0, vmax=1, interpolation="nearest")
        name = classes[c] if classes and c < len(classes) else str(c)
        axes[c][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    method = syn.provenance.get("method", "?")
    fig.suptitle(f"{method} on {syn.dataset}, ipc {syn.ipc}", fontsize=9)
    fig.tight_layout()
    output = Path(output)
    if output.suffix not in (".png", ".svg"):
        output = output.with_name(output.name + ".png")
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=150)
    plt.close(fig)
    return output
