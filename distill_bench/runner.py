"""Run grid cells: distil (or reuse a saved set), evaluate, append one row per run.

A cell is (method, dataset, ipc, shots, backbone, protocol, seed). Finished evaluation runs
are found in the results store by their ``run_key`` and not redone; a distilled set is
saved under ``<results>/synthetic/`` before evaluation starts, so an interrupted grid resumes
where it stopped. Methods keep their own checkpoints in ``<results>/work/<set>/``.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from distill_bench.budget import parse_shots, real_subset
from distill_bench.data import RealDataset, load_dataset
from distill_bench.evaluator import Protocol, evaluate, get_protocol
from distill_bench.method import DistillationMethod, RunContext, create_method
from distill_bench.provenance import provenance
from distill_bench.results import ResultStore, config_hash
from distill_bench.synthetic import SyntheticSet

logger = logging.getLogger(__name__)


@dataclass
class Cell:
    """One (method, dataset, ipc, shots, backbone, protocol, seed) job."""
    method: str
    dataset: str
    ipc: int
    shots: int | str = "all"
    backbone: str = "convnet"
    protocol: str = "standard"
    seed: int = 0
    precision: str = "fp32"
    method_options: dict = field(default_factory=dict)
    protocol_options: dict = field(default_factory=dict)
    # how the evaluator runs (``evaluate``'s speed options): recorded in every row, not
    # part of the run key, as they change results only by floating-point summation order
    compile_model: bool = False
    batched_runs: bool = False

    @property
    def speed_options(self) -> dict:
        return {"compile_model": self.compile_model, "batched_runs": self.batched_runs}

    def __post_init__(self):
        self.shots = parse_shots(self.shots)
        if isinstance(self.ipc, bool) or not isinstance(self.ipc, int) or self.ipc < 1:
            raise ValueError(f"ipc={self.ipc!r}: images per class must be a positive integer")


def _check_set(syn: SyntheticSet, ipc: int, num_classes: int, method: str) -> None:
    counts = torch.bincount(syn.hard_labels, minlength=num_classes)
    if not bool((counts == ipc).all()):
        raise RuntimeError(f"method {method!r} returned {counts.tolist()} images per class, "
                           f"not ipc={ipc} each; this is a bug in the method")


def _stem(cell: Cell, config: dict, data: RealDataset, tag: str = "") -> str:
    key = config_hash({"config": config, "checksum": data.checksum, "ipc": cell.ipc,
                       "shots": cell.shots, "seed": cell.seed})
    where = f"{cell.method}-{cell.dataset}-ipc{cell.ipc}-shots{cell.shots}-s{cell.seed}"
    return f"{where}-{tag}{key}"


def set_name(cell: Cell, method: DistillationMethod, data: RealDataset) -> str:
    """File stem of a cell's synthetic set; depends on everything that shapes the set."""
    return _stem(cell, method.config.to_dict(), data)


def work_name(cell: Cell, method: DistillationMethod, data: RealDataset) -> str:
    """Folder of a cell's resumable state: ``set_name`` without the extendable fields."""
    config = {k: v for k, v in method.config.to_dict().items()
              if k not in method.extendable}
    return _stem(cell, config, data, tag="w")


def distill_cell(cell: Cell, method: DistillationMethod, data: RealDataset,
                 results_dir: Path, device: str = "cpu",
                 progress: bool = True) -> tuple[SyntheticSet, Path]:
    """The cell's synthetic set: loaded if saved, otherwise distilled and saved."""
    name = set_name(cell, method, data)
    path = results_dir / "synthetic" / f"{name}.pt"
    if path.exists():
        logger.info("reusing synthetic set %s", path)
        return SyntheticSet.load(path), path
    real = real_subset(data, cell.shots, cell.seed)
    workdir = results_dir / "work" / work_name(cell, method, data)
    workdir.mkdir(parents=True, exist_ok=True)
    context = RunContext(torch.device(device), workdir, teacher_data=lambda: data,
                         artifacts_dir=results_dir / "artifacts" / name, progress=progress)
    logger.info("distilling %s: ipc %d, shots %s, seed %d", cell.method, cell.ipc,
                cell.shots, cell.seed)
    started = time.time()
    torch.manual_seed(cell.seed)
    syn = method.distill(real, cell.ipc, cell.seed, context)
    # a resumed run also cost what earlier processes spent on its checkpointed state
    seconds = time.time() - started + context.resumed_seconds
    _check_set(syn, cell.ipc, data.num_classes, cell.method)
    syn.provenance.update({"distill_seconds": seconds, "seed": cell.seed, "ipc": cell.ipc,
                           "resumed_seconds": context.resumed_seconds,
                           "budget": method.budget(), **context.info,
                           "created": datetime.now(timezone.utc).isoformat(),
                           **provenance(device)})
    syn.save(path)
    logger.info("distilled %s in %.1f s -> %s", cell.method, seconds, path)
    return syn, path


def run_cell(cell: Cell, results_dir: str | Path | None = None, data_root: str | None = None,
             data: RealDataset | None = None, device: str = "cpu",
             progress: bool = True) -> list[dict]:
    """Distil and evaluate one cell, appending a row per evaluation run; returns new rows."""
    store = ResultStore(results_dir)
    method = create_method(cell.method, **cell.method_options)
    method.check_cell(cell.ipc, cell.shots)  # before a dataset takes seconds to load
    data = data or load_dataset(cell.dataset, data_root)
    protocol: Protocol = get_protocol(cell.protocol, **cell.protocol_options)
    comparable = protocol.comparable and not cell.protocol_options
    run_key = config_hash({"set": set_name(cell, method, data), "backbone": cell.backbone,
                           "protocol": protocol.to_dict(), "precision": cell.precision})
    done = store.done_runs(run_key)  # read the store once, not once per run
    todo = [r for r in range(protocol.num_eval_runs) if r not in done]
    if not todo:
        logger.info("cell already done: %s %s ipc %d shots %s %s %s seed %d", cell.method,
                    cell.dataset, cell.ipc, cell.shots, cell.backbone, cell.protocol, cell.seed)
        return []
    syn, syn_path = distill_cell(cell, method, data, store.dir, device, progress)
    prov = syn.provenance
    budget = prov.get("budget", {})
    rows = []

    def store_run(run) -> None:
        row = {
            "method": cell.method, "dataset": cell.dataset, "ipc": cell.ipc,
            "shots": str(cell.shots), "backbone": cell.backbone, "protocol": cell.protocol,
            "precision": cell.precision, "seed": cell.seed, "run": run.run,
            "test_acc": round(run.test_acc, 4),
            "test_acc_per_class": [round(a, 2) for a in run.test_acc_per_class],
            "distill_seconds": round(prov.get("distill_seconds", float("nan")), 2),
            "eval_seconds": round(run.seconds, 2), "comparable": comparable,
            "paper_budget": budget.get("paper_budget", True), "budget": budget,
            "config_id": config_hash(method.config.to_dict()),
            "config": method.config.to_dict(), "protocol_config": protocol.to_dict(),
            "num_syn": int(syn.syn_images.shape[0]), "eval_lr": syn.eval_lr,
            "data_checksum": prov.get("data_checksum", data.checksum),
            "teacher": prov.get("teacher"), "synthetic_set": str(syn_path),
            "run_key": run_key, "eval_options": cell.speed_options,
            "time": datetime.now(timezone.utc).isoformat(),
            **provenance(device),
        }
        store.append(row)
        rows.append(row)

    evaluate(syn, data, protocol, cell.backbone, cell.seed, todo, cell.precision, device,
             progress, on_run=store_run, **cell.speed_options)
    accs = [r["test_acc"] for r in rows]
    logger.info("%s %s ipc %d shots %s: %s", cell.method, cell.dataset, cell.ipc, cell.shots,
                ", ".join(f"{a:.2f}" for a in accs))
    return rows


def expand_grid(methods: list[str], ipcs: list[int], **common) -> list[Cell]:
    return [Cell(m, ipc=i, **common) for m in methods for i in ipcs]

