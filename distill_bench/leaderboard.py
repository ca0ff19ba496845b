"""Aggregate stored runs into a leaderboard with pandas, and export it.

One row per (method, dataset, ipc, shots, backbone, protocol, precision, config_id) and
protocol configuration, with the number of evaluation runs and the mean and standard
deviation of test accuracy (percent). Beside each method stands the random real subset of
the same cell and the gain over it, as DD-Ranking (Li et al., 2025) argues every table
should show, because the training recipe alone moves accuracies by several points. Flags
mark cells that must not be read as published-comparable numbers (see ``FLAGS``).

``write_leaderboard_files`` turns ``<results>/runs.jsonl`` into ``leaderboard.csv`` and a
generated ``README.md`` (``distill-bench leaderboard --write``).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from distill_bench.published import published
from distill_bench.results import CELL_KEYS, ResultStore, config_hash

logger = logging.getLogger(__name__)

# a leaderboard row: the cell, the precision, the method's and the protocol's configs, and
# the data files (rows computed on other copies of a dataset never mix)
GROUP_KEYS = list(CELL_KEYS) + ["precision", "config_id", "protocol_id", "data_checksum"]
# what the random reference must share with a row to be its fair comparison
REFERENCE_KEYS = ["dataset", "ipc", "shots", "backbone", "protocol", "protocol_id",
                  "precision", "data_checksum"]
FILTER_KEYS = ("method", "dataset", "ipc", "shots", "backbone", "protocol", "precision")
NOT_RECIPE = ("num_eval_runs",)  # protocol fields that do not change a run's outcome
MIN_RUNS = 5                    # fewer evaluation runs than this: flagged few-runs
FORMATS = ("csv", "markdown", "latex")
REFERENCE_METHOD = "random"
# numeric columns sort best-first unless ":asc" is given
DESCENDING = ("acc_mean", "gain_over_random", "random_acc", "n_runs")
# the compact view's column names, accepted by sort
SORT_ALIASES = {"acc": "acc_mean", "gain": "gain_over_random", "random": "random_acc",
                "runs": "n_runs"}

FLAGS = {
    "not-comparable": "the protocol is not comparable with published numbers (the CPU "
                      "`quick` preset, or epochs / runs changed on the command line)",
    "reduced-budget": "the method ran with less compute than its paper (fewer iterations, "
                      "experts, ...); see the row's `budget` in runs.jsonl",
    "few-runs": f"fewer than {MIN_RUNS} evaluation runs: the std is not reliable",
    "jpeg-copy": "the dataset is a lossy JPEG copy (cifar10-jpeg75), so numbers are close "
                 "to, not equal to, those on the official files",
    "random-other-shots": "no random subset with the same shots was run; the reference "
                          "pools random subsets drawn under other shots (the same "
                          "distribution whenever shots >= ipc, e.g. for a zero-shot row)",
    "no-random": "no random subset of this (dataset, ipc, backbone, protocol, precision) "
                 "exists yet, so there is no gain to show",
}

COLUMNS = {
    "method": "registered method name (`distill-bench list methods`)",
    "dataset": "registered dataset name; `cifar10-jpeg75` is the JPEG copy of CIFAR-10",
    "ipc": "synthetic images per class",
    "shots": "real training images per class the method was allowed to see (0 = none, "
             "`all` = the whole training split)",
    "backbone": "network trained on the synthetic set for evaluation (cross-architecture "
                "rows use another network than the one the method distilled with)",
    "protocol": "evaluation preset (`distill-bench list protocols`)",
    "epochs": "evaluation epochs actually used (differs from the preset when overridden)",
    "precision": "fp32, or bf16 autocast during evaluation",
    "acc": "test accuracy (%) of the final network, mean ± std over the runs",
    "runs": "number of evaluation runs (freshly initialised networks) behind the mean",
    "random": "random real subset of the same dataset, ipc, shots, backbone, protocol and "
              "precision: mean ± std",
    "gain": "acc minus random, in accuracy points (`ref` on the random rows themselves)",
    "paper": "the published number for this cell (`distill_bench/published.py`; shown for "
             "comparable protocols only): a reference from another recipe, not a target",
    "distill": "wall-clock time of the distillation on the machine of the rows (`-` for "
               "the random subset, which only draws images)",
    "flags": "warnings, explained below",
}
CSV_ONLY = {
    "config_id": "hash of the method's resolved config (one row per config)",
    "protocol_id": "hash of the protocol's resolved settings (but the number of runs)",
    "distill_seconds": "mean wall-clock seconds of the distillation",
    "eval_seconds": "mean wall-clock seconds of one evaluation run",
    "comparable": "False when the protocol is not comparable with published numbers",
    "paper_budget": "False when the method used less compute than its paper",
    "paper_acc": "published mean accuracy of this cell (empty when no paper reports it)",
    "paper_std": "published std (empty when the paper gives none)",
    "paper_source": "the paper and table the published number comes from",
    "random_runs": "evaluation runs behind the random reference",
    "random_shots": "shots of the random rows used as the reference",
    "data_checksum": "SHA-256 of the dataset files the rows were computed on",
}


def runs_frame(rows: list[dict]) -> pd.DataFrame:
    """Stored rows as a DataFrame with the leaderboard's columns."""
    columns = [k for k in GROUP_KEYS if k != "protocol_id"] + [
        "seed", "run", "test_acc", "distill_seconds", "eval_seconds", "comparable",
        "paper_budget", "data_checksum", "protocol_config"]
    frame = pd.DataFrame(rows)
    for col in columns:
        if col not in frame:
            frame[col] = None
    frame["shots"] = frame["shots"].astype(str)
    frame["ipc"] = frame["ipc"].astype(int)
    frame["comparable"] = frame["comparable"].fillna(False).astype(bool)
    frame["paper_budget"] = frame["paper_budget"].fillna(True).astype(bool)
    frame["protocol_id"] = [_protocol_id(p, name) for p, name
                            in zip(frame["protocol_config"], frame["protocol"])]
    frame["epochs"] = [p.get("epochs") if isinstance(p, dict) else None
                       for p in frame["protocol_config"]]
    frame["config_id"] = frame["config_id"].fillna("-")
    frame["data_checksum"] = frame["data_checksum"].fillna("-")
    frame["precision"] = frame["precision"].fillna("fp32")
    # the same (seed, run) of one cell evaluated twice (e.g. rerun with more runs) is the
    # same network: count it once, the latest row
    frame = frame.drop_duplicates(GROUP_KEYS + ["seed", "run"], keep="last")
    return frame[GROUP_KEYS + [c for c in columns if c not in GROUP_KEYS] + ["epochs"]]


def _protocol_id(config, name) -> str:
    """Hash of the training recipe; the number of runs does not split a cell."""
    if not isinstance(config, dict):
        return str(name)
    return config_hash({k: v for k, v in config.items() if k not in NOT_RECIPE})


def _shots_order(value: str) -> float:
    return float("inf") if value == "all" else float(value)


def build_leaderboard(rows: list[dict], sort: str | list[str] | None = None,
                      **filters) -> pd.DataFrame:
    """Aggregate runs into one row per cell and config, with the random reference.

    Args:
        rows: result rows (``ResultStore.rows()``).
        sort: column names (``"acc_mean"``, ``"gain_over_random:asc"``, ...); default: by
            dataset, ipc, shots, backbone, protocol, then accuracy best-first.
        filters: ``FILTER_KEYS`` to keep, each a value or a list of values. The random
            reference is computed before filtering, so ``method="deepkkt"`` keeps its gain.
    """
    unknown = sorted(set(filters) - set(FILTER_KEYS))
    if unknown:
        raise ValueError(f"unknown leaderboard filter(s) {unknown}; allowed: {FILTER_KEYS}")
    if not rows:
        return pd.DataFrame(columns=GROUP_KEYS + ["n_runs", "acc_mean", "acc_std"])
    frame = runs_frame(rows)
    board = _aggregate(frame)
    board = _add_random_reference(board, frame)
    board = _add_published(board)
    board["flags"] = board.apply(_flags, axis=1)
    board = filter_board(board, **filters)
    board = sort_board(board, sort)
    return board.round({"acc_mean": 2, "acc_std": 2, "random_acc": 2, "random_std": 2,
                        "gain_over_random": 2, "distill_seconds": 1, "eval_seconds": 1})


def _aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    grouped = frame.groupby(GROUP_KEYS, dropna=False)
    return grouped.agg(
        epochs=("epochs", "first"), n_runs=("test_acc", "size"),
        acc_mean=("test_acc", "mean"), acc_std=("test_acc", lambda s: s.std(ddof=0)),
        distill_seconds=("distill_seconds", "mean"), eval_seconds=("eval_seconds", "mean"),
        comparable=("comparable", "all"),
        paper_budget=("paper_budget", "all")).reset_index()


def _reference(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean, std and count of random-subset runs per ``keys`` (std over all runs)."""
    grouped = runs.groupby(keys, dropna=False)
    return grouped.agg(random_acc=("test_acc", "mean"),
                       random_std=("test_acc", lambda s: s.std(ddof=0)),
                       random_runs=("test_acc", "size"),
                       random_shots=("shots", lambda s: ",".join(
                           sorted(set(s), key=_shots_order)))).reset_index()


def _add_random_reference(board: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """Random subset of the same cell; failing that, of any shots (same distribution)."""
    random = frame[frame["method"] == REFERENCE_METHOD]
    exact = _reference(random, REFERENCE_KEYS)
    board = board.merge(exact, on=REFERENCE_KEYS, how="left")
    pooled_keys = [k for k in REFERENCE_KEYS if k != "shots"]
    pooled = _reference(random, pooled_keys).add_suffix("_pooled")
    pooled = pooled.rename(columns={f"{k}_pooled": k for k in pooled_keys})
    board = board.merge(pooled, on=pooled_keys, how="left")
    missing = board["random_acc"].isna() & board["random_acc_pooled"].notna()
    for col in ("random_acc", "random_std", "random_runs", "random_shots"):
        board[col] = board[col].astype(object).where(~missing, board[f"{col}_pooled"])
        board = board.drop(columns=f"{col}_pooled")
    board["random_other_shots"] = missing
    board["random_acc"] = board["random_acc"].astype(float)
    board["random_std"] = board["random_std"].astype(float)
    board["random_runs"] = pd.to_numeric(board["random_runs"]).astype("Int64")
    board["gain_over_random"] = board["acc_mean"] - board["random_acc"]
    return board


def _add_published(board: pd.DataFrame) -> pd.DataFrame:
    """The paper's number for each comparable row (``distill_bench.published``)."""
    found = [published(m, d, i, s) if ok else None for m, d, i, s, ok in zip(
        board["method"], board["dataset"], board["ipc"], board["shots"], board["comparable"])]
    board["paper_acc"] = [p.mean if p else float("nan") for p in found]
    board["paper_std"] = [p.std if p and p.std is not None else float("nan") for p in found]
    board["paper_source"] = [p.source if p else "" for p in found]
    return board


def _flags(row) -> str:
    flags = []
    if not row["comparable"]:
        flags.append("not-comparable")
    if not row["paper_budget"]:
        flags.append("reduced-budget")
    if row["n_runs"] < MIN_RUNS:
        flags.append("few-runs")
    if "jpeg" in str(row["dataset"]):
        flags.append("jpeg-copy")
    if pd.isna(row["random_acc"]):
        flags.append("no-random")
    elif row["random_other_shots"]:
        flags.append("random-other-shots")
    return ",".join(flags)


def filter_board(board: pd.DataFrame, **filters) -> pd.DataFrame:
    """Keep rows whose column equals (or is in) each given value; ``None`` keeps all."""
    for col, value in filters.items():
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple, set)) else [value]
        board = board[board[col].astype(str).isin([str(v) for v in values])]
    return board


def sort_board(board: pd.DataFrame, sort: str | list[str] | None = None) -> pd.DataFrame:
    """Sort by ``sort`` keys (``"col"``, ``"col:asc"``, ``"col:desc"``; ``acc``, ``gain``,
    ``random`` and ``runs`` name the numeric columns) or the default order."""
    board = board.assign(_shots=board["shots"].map(_shots_order))
    if not sort:
        keys = ["dataset", "ipc", "_shots", "backbone", "protocol", "acc_mean"]
        ascending = [True] * 5 + [False]
    else:
        keys, ascending = [], []
        for item in [sort] if isinstance(sort, str) else sort:
            col, _, order = item.partition(":")
            col = SORT_ALIASES.get(col, col)
            if col not in board.columns or col.startswith("_"):
                allowed = [c for c in board.columns if not c.startswith("_")]
                raise ValueError(f"cannot sort by {col!r}; choose among {allowed}")
            if order not in ("", "asc", "desc"):
                raise ValueError(f"sort order {order!r} in {item!r}: use asc or desc")
            keys.append("_shots" if col == "shots" else col)
            ascending.append(order == "asc" if order else col not in DESCENDING)
    board = board.sort_values(keys, ascending=ascending, na_position="last", kind="stable")
    return board.drop(columns="_shots").reset_index(drop=True)


# --- export --------------------------------------------------------------------------------

def _pm(mean, std) -> str:
    if pd.isna(mean):
        return "-"
    return f"{mean:.2f} ± {std:.2f}" if not pd.isna(std) else f"{mean:.2f}"


def _gain(gain, method: str, other_shots: bool) -> str:
    if method == REFERENCE_METHOD and not other_shots:
        return "ref"  # the reference itself
    return "-" if pd.isna(gain) else f"{gain:+.2f}"


def _duration(seconds) -> str:
    """``42 s``, ``3.1 min``, ``2.5 h``; ``-`` when nothing was distilled."""
    if pd.isna(seconds) or seconds < 0.5:
        return "-"
    if seconds < 100:
        return f"{seconds:.0f} s"
    if seconds < 6000:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def display_frame(board: pd.DataFrame) -> pd.DataFrame:
    """The compact view shown in Markdown and LaTeX (columns of ``COLUMNS``)."""
    if board.empty:
        return pd.DataFrame(columns=list(COLUMNS))
    out = pd.DataFrame({
        "method": board["method"], "dataset": board["dataset"], "ipc": board["ipc"],
        "shots": board["shots"], "backbone": board["backbone"],
        "protocol": board["protocol"],
        "epochs": board["epochs"].map(lambda e: "-" if pd.isna(e) else str(int(e))),
        "precision": board["precision"],
        "acc": [_pm(m, s) for m, s in zip(board["acc_mean"], board["acc_std"])],
        "runs": board["n_runs"],
        "random": [_pm(m, s) for m, s in zip(board["random_acc"], board["random_std"])],
        "gain": [_gain(g, m, other) for g, m, other in zip(
            board["gain_over_random"], board["method"], board["random_other_shots"])],
        "paper": [_pm(m, s) for m, s in zip(board["paper_acc"], board["paper_std"])],
        "distill": board["distill_seconds"].map(_duration),
        "flags": board["flags"].map(lambda f: f.replace(",", ", ")),
    })
    return out.reset_index(drop=True)


def export(board: pd.DataFrame, fmt: str = "csv", full: bool = False) -> str:
    """The leaderboard as CSV (every column), Markdown or LaTeX (compact unless ``full``)."""
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r} is not known; choose one of {FORMATS}")
    if fmt == "csv":
        return board.drop(columns=["random_other_shots"], errors="ignore").to_csv(index=False)
    shown = board.drop(columns=["data_checksum", "random_other_shots"], errors="ignore")
    shown = shown if full else display_frame(board)
    return _markdown(shown) if fmt == "markdown" else _latex(shown)


def _cell(value) -> str:
    if isinstance(value, float):
        return "-" if pd.isna(value) else f"{value:.2f}"
    return "-" if value is None else str(value)


def _markdown(frame: pd.DataFrame) -> str:
    """A GitHub table without the optional ``tabulate`` dependency."""
    lines = ["| " + " | ".join(frame.columns) + " |",
             "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                 "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                 "^": r"\textasciicircum{}"}


def _latex_escape(text: str) -> str:
    out = "".join(LATEX_SPECIAL.get(ch, ch) for ch in text)
    return out.replace("±", r"$\pm$")


def _latex(frame: pd.DataFrame) -> str:
    """A booktabs tabular (needs ``\\usepackage{booktabs}``), without jinja2."""
    spec = "".join("r" if pd.api.types.is_numeric_dtype(frame[c]) else "l"
                   for c in frame.columns)
    lines = [f"\\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(_latex_escape(str(c)) for c in frame.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(_latex_escape(_cell(v)) for v in row) + r" \\"
              for row in frame.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


# --- the committed files -------------------------------------------------------------------

README_HEAD = """\
# Results

Generated by `distill-bench leaderboard --write` from `runs.jsonl` ({n_rows} evaluation
runs); do not edit by hand. `leaderboard.csv` holds the same table with every column.
"""

README_NOTES = """\
## Reading the table

Each method row stands beside the random real subset of the same dataset, ipc, shots,
backbone, protocol and precision, and the gain over it: evaluation recipes alone move
accuracies by several points, so the gain is the fairer figure to compare across
papers. The random rows themselves show `ref` as their gain.

| column | meaning |
|---|---|
{columns}

Columns only in `leaderboard.csv`:

| column | meaning |
|---|---|
{csv_columns}

| flag | meaning |
|---|---|
{flags}

## Backbones and BatchNorm

`backbone` names the network trained on the synthetic set at evaluation time; running
`distill-bench run --backbone convnet,resnet18` evaluates the same synthetic set on both
(it is distilled once). BatchNorm networks (`convnet_bn`, `resnet18`) are handled as in the
DC/DSA/DM/MTT evaluation code: they train in train mode on mini-batches of the synthetic
set (with ipc 1 a batch is the whole set, e.g. 10 images), so their batch statistics and
running averages come from synthetic images only, and they are tested in eval mode with
those running averages. Methods that match through a BatchNorm network during distillation
must take care of it themselves (DC fixes the statistics on a real batch first).
"""


def readme_text(rows: list[dict], plots: list[Path] | None = None,
                results_dir: Path | None = None) -> str:
    """The generated ``results/README.md``: leaderboards per dataset, then the legend."""
    board = build_leaderboard(rows)
    parts = [README_HEAD.format(n_rows=len(rows))]
    if board.empty:
        parts.append("\nNo results yet: run `distill-bench run ...` first.\n")
    for dataset in sorted(board["dataset"].unique()) if not board.empty else []:
        parts.append(f"\n## {dataset}\n\n")
        parts.append(export(board[board["dataset"] == dataset], "markdown"))
    for plot in plots or []:
        shown = plot.relative_to(results_dir) if results_dir else plot
        parts.append(f"\n![{plot.stem}]({shown.as_posix()})\n")
    parts.append("\n" + README_NOTES.format(
        columns=_legend(COLUMNS), csv_columns=_legend(CSV_ONLY), flags=_legend(FLAGS)))
    return "".join(parts)


def _legend(mapping: dict) -> str:
    return "\n".join(f"| `{key}` | {text} |" for key, text in mapping.items())


def write_leaderboard_files(results_dir: str | os.PathLike | None = None,
                            plots: bool = False) -> list[Path]:
    """Regenerate ``leaderboard.csv`` and ``README.md`` (and accuracy plots if ``plots``)
    in the results folder from its ``runs.jsonl``; returns the paths written."""
    store = ResultStore(results_dir)
    rows = store.rows()
    written = [_write(store.dir / "leaderboard.csv", export(build_leaderboard(rows), "csv"))]
    pictures: list[Path] = []
    if plots and rows:
        from distill_bench.plots import plot_accuracy  # matplotlib only when asked
        for dataset in sorted({r["dataset"] for r in rows}):
            try:
                pictures += plot_accuracy(rows, dataset,
                                          store.dir / "plots" / f"{dataset}-accuracy")
            except ValueError as err:  # e.g. several protocols and none chosen
                logger.warning("no accuracy plot for %s: %s", dataset, err)
        written += pictures
    pngs = [p for p in pictures if p.suffix == ".png"]
    if not plots:  # keep linking the figures an earlier --write drew
        datasets = sorted({r["dataset"] for r in rows})
        pngs = [f for f in (store.dir / "plots" / f"{d}-accuracy.png" for d in datasets)
                if f.exists()]
    written.append(_write(store.dir / "README.md", readme_text(rows, pngs, store.dir)))
    return written


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path
