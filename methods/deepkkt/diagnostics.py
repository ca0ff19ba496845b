"""Diagnostics of a DSV synthesis run, written next to its result.

- ``history.csv``: per logged iteration, stationarity and primal losses, the mean entropy of
  the candidates' predictions (the paper: it rises as candidates approach the boundary),
  the fraction classified correctly, candidates alive, mean lambda;
- ``lambda_vs_accuracy.csv``: per class, the sum of lambda of the surviving candidates and
  the teacher's test accuracy on that class; ``summary.json`` holds their Pearson and
  Spearman correlations (the paper reports a strong positive one);
- ``dsv_grid.png``: the DSVs, one row per class.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from distill_bench.plots import to_pixels

logger = logging.getLogger(__name__)


def save_grid(images: torch.Tensor, labels: torch.Tensor, path: Path,
              class_names: list[str] | None = None, title: str = "") -> Path:
    """Save pixel images (N, C, H, W) in [0, 1] as a grid, one row per class."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = sorted(set(labels.tolist()))
    per_row = max(int((labels == c).sum()) for c in classes)
    fig, axes = plt.subplots(len(classes), per_row, squeeze=False,
                             figsize=(1.1 * per_row + 1.2, 1.1 * len(classes)))
    for r, c in enumerate(classes):
        row = images[labels == c]
        for j in range(per_row):
            ax = axes[r][j]
            ax.axis("off")
            if j < len(row):
                img = row[j].permute(1, 2, 0).numpy()
                ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img,
                          cmap="gray" if img.shape[-1] == 1 else None, vmin=0, vmax=1)
        name = class_names[c] if class_names and c < len(class_names) else str(c)
        axes[r][0].text(-0.1, 0.5, name, transform=axes[r][0].transAxes, ha="right",
                        va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def lambda_accuracy(lam: torch.Tensor, alive: torch.Tensor, labels: torch.Tensor,
                    per_class_acc: list[float]) -> tuple[list[dict], dict]:
    """Per-class lambda sums against per-class teacher accuracy, and their correlations."""
    from scipy.stats import pearsonr, spearmanr

    rows = []
    for c, acc in enumerate(per_class_acc):
        mask = (labels == c) & alive
        rows.append({"class": c, "lambda_sum": float(lam[mask].sum()),
                     "teacher_test_acc": 100 * acc})
    sums = [r["lambda_sum"] for r in rows]
    accs = [r["teacher_test_acc"] for r in rows]
    stats = {"pearson": float("nan"), "spearman": float("nan")}
    if len(set(sums)) > 1 and len(set(accs)) > 1:
        stats = {"pearson": float(pearsonr(sums, accs)[0]),
                 "spearman": float(spearmanr(sums, accs)[0])}
    return rows, stats


def write(context, history, lam, alive, labels, teacher_info, dsv, dsv_labels,
          preprocessing, class_names: list[str] | None = None) -> Path | None:
    """Write all diagnostics into ``context.artifacts_dir`` (if the harness gave one)."""
    import pandas as pd

    folder = getattr(context, "artifacts_dir", None)
    if folder is None:
        return None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(history).to_csv(folder / "history.csv", index=False)
    rows, stats = lambda_accuracy(lam.cpu(), alive.cpu(), labels.cpu(),
                                  teacher_info["test_acc_per_class"])
    pd.DataFrame(rows).to_csv(folder / "lambda_vs_accuracy.csv", index=False)
    entropy = [h["entropy"] for h in history]
    summary = {"lambda_accuracy_correlation": stats,
               "entropy_start": entropy[0] if entropy else None,
               "entropy_end": entropy[-1] if entropy else None,
               "teacher_test_acc": teacher_info.get("test_acc"),
               **context.info.get("deepkkt", {})}
    (folder / "summary.json").write_text(json.dumps(summary, indent=1))
    save_grid(to_pixels(dsv, preprocessing), dsv_labels.cpu(), folder / "dsv_grid.png",
              class_names, title="Deep Support Vectors")
    context.info.setdefault("deepkkt", {})["diagnostics"] = str(folder)
    context.info["deepkkt"]["lambda_accuracy_correlation"] = stats
    logger.info("diagnostics in %s: entropy %.3f -> %.3f, lambda/accuracy pearson %.2f",
                folder, summary["entropy_start"] or 0, summary["entropy_end"] or 0,
                stats["pearson"])
    return folder
