"""Aggregate stored runs into a leaderboard with pandas, and export it.

One row per (method, dataset, ipc, shots, backbone, protocol, precision, config_id), with
the number of evaluation runs, mean and standard deviation of test accuracy (percent), the
random real subset of the same cell and the gain over it, and flags for cells that must not
be compared with published numbers (non-comparable protocol, reduced budget, few runs).
"""
from __future__ import annotations

import pandas as pd

from distill_bench.results import CELL_KEYS

GROUP_KEYS = list(CELL_KEYS) + ["precision", "config_id"]
MIN_RUNS = 5
FORMATS = ("csv", "markdown", "latex")


def runs_frame(rows: list[dict]) -> pd.DataFrame:
    """Stored rows as a DataFrame with the leaderboard's columns."""
    columns = GROUP_KEYS + ["seed", "run", "test_acc", "distill_seconds", "eval_seconds",
                            "comparable", "paper_budget", "data_checksum"]
    frame = pd.DataFrame(rows)
    for col in columns:
        if col not in frame:
            frame[col] = None
    frame["shots"] = frame["shots"].astype(str)
    return frame[columns]


def _shots_order(value: str) -> float:
    return float("inf") if value == "all" else float(value)


def build_leaderboard(rows: list[dict], **filters) -> pd.DataFrame:
    """Aggregate runs; ``filters`` keep rows whose column equals (or is in) the value."""
    frame = runs_frame(rows)
    for col, value in filters.items():
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple, set)) else [value]
        frame = frame[frame[col].astype(str).isin([str(v) for v in values])]
    if frame.empty:
        return pd.DataFrame(columns=GROUP_KEYS + ["n_runs", "acc_mean", "acc_std"])
    grouped = frame.groupby(GROUP_KEYS, dropna=False)
    board = grouped.agg(
        n_runs=("test_acc", "size"), acc_mean=("test_acc", "mean"),
        acc_std=("test_acc", lambda s: s.std(ddof=0)),
        distill_seconds=("distill_seconds", "mean"),
        eval_seconds=("eval_seconds", "mean"),
        comparable=("comparable", "all"), paper_budget=("paper_budget", "all"),
        data_checksum=("data_checksum", "first")).reset_index()
    board = _add_random_reference(board)
    board["flags"] = board.apply(_flags, axis=1)
    board = board.assign(_shots=board["shots"].map(_shots_order))
    board = board.sort_values(["dataset", "ipc", "_shots", "backbone", "protocol",
                               "acc_mean"], ascending=[True, True, True, True, True, False])
    return board.drop(columns="_shots").reset_index(drop=True).round(
        {"acc_mean": 2, "acc_std": 2, "random_acc": 2, "gain_over_random": 2,
         "distill_seconds": 1, "eval_seconds": 1})


def _add_random_reference(board: pd.DataFrame) -> pd.DataFrame:
    keys = ["dataset", "ipc", "shots", "backbone", "protocol", "precision"]
    random = board[board["method"] == "random"].groupby(keys)["acc_mean"].mean()
    random = random.rename("random_acc").reset_index()
    board = board.merge(random, on=keys, how="left")
    board["gain_over_random"] = board["acc_mean"] - board["random_acc"]
    return board


def _flags(row) -> str:
    flags = []
    if not row["comparable"]:
        flags.append("not-comparable")
    if not row["paper_budget"]:
        flags.append("reduced-budget")
    if row["n_runs"] < MIN_RUNS:
        flags.append(f"few-runs")
    if str(row["dataset"]).endswith("jpeg75"):
        flags.append("jpeg-copy")
    return ",".join(flags)


def export(board: pd.DataFrame, fmt: str = "csv") -> str:
    """The leaderboard as CSV, Markdown or LaTeX text."""
    if fmt == "csv":
        return board.to_csv(index=False)
    shown = board.drop(columns=["data_checksum"], errors="ignore")
    if fmt == "markdown":
        return _markdown(shown)
    if fmt == "latex":
        return shown.to_latex(index=False, float_format="%.2f", na_rep="-")
    raise ValueError(f"format={fmt!r} is not known; choose one of {FORMATS}")


def _markdown(frame: pd.DataFrame) -> str:
    """A GitHub table without the optional ``tabulate`` dependency."""
    def cell(v):
        if isinstance(v, float):
            return "-" if pd.isna(v) else f"{v:.2f}"
        return "-" if v is None else str(v)
    lines = ["| " + " | ".join(frame.columns) + " |",
             "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"
