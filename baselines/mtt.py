"""``mtt``: dataset distillation by matching training trajectories.

Cazenavette, Wang, Torralba, Efros and Zhu, "Dataset Distillation by Matching Training
Trajectories", CVPR 2022. Stage 1 (``baselines.experts``) trains experts on the real images
the budget allows and keeps their parameters ``theta*_t`` after every epoch. Stage 2 repeats:

1. draw an expert and a start epoch ``t < max_start_epoch``; the student starts at
   ``theta_0 = theta*_t``;
2. the student takes ``N = syn_steps`` SGD steps on mini-batches (``batch_syn``) of the
   DSA-augmented synthetic images, ``theta_{n+1} = theta_n - alpha * grad l(x_syn; theta_n)``
   (Eq. 1), kept differentiable, with a learnable step size ``alpha`` (``syn_lr``);
3. the loss is ``|theta_N - theta*_{t+M}|^2 / |theta*_t - theta*_{t+M}|^2`` (Eq. 2,
   ``M = expert_epochs``); SGD with momentum 0.5 updates the images (``lr_img``) and alpha
   (``lr_lr``).

The learned alpha is the synthetic set's ``eval_lr``; with ZCA on, the set carries the
whitening so the evaluator whitens test images identically.

Defaults per ipc are the paper's CIFAR-10 settings (PROTOCOL.md section 3):

| ipc | syn_steps | expert_epochs | max_start_epoch | zca | lr_img | lr_lr |
|-----|-----------|---------------|-----------------|-----|--------|-------|
| 1   | 50        | 2             | 2               | yes | 1000   | 1e-7  |
| 10  | 30        | 2             | 20              | yes | 100    | 1e-5  |
| 50  | 30        | 2             | 40              | no  | 1000   | 1e-5  |

Any other ipc takes the row of the nearest tabulated ipc on a log scale (2-3 -> 1,
4-22 -> 10, 23 and more -> 50). The table's ZCA assumes the whole training split; from a
subset with fewer images than values per image (CIFAR-10: 3072) the whitening is
rank-deficient, so ``zca_full_rank`` leaves it off unless ``zca=true`` is set (see
``MTTConfig.resolve``). The initial step size is 0.01 throughout. Budget presets fill
``num_experts``, ``train_epochs`` and ``iterations`` when left unset: ``cpu`` (5 experts,
``max_start_epoch + expert_epochs`` epochs, 500 iterations) and ``paper`` (100 experts,
50 epochs, 5000 iterations); ``MTTConfig.paper()`` builds the latter. Experts train with
the paper's batch of 256 real images, capped at a tenth of the subset so that a small
``shots`` budget still gives 10 SGD steps per expert epoch (see ``MTTConfig.resolve``).

Guards: the step size is clamped to at least ``min_syn_lr`` after every update; a non-finite
loss or gradient stops the run before any state changes, naming the iteration and the state;
the config is checked before any work (for example experts shorter than
``max_start_epoch + expert_epochs - 1`` epochs, the last snapshot a target can need).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from baselines.experts import (STORAGE, ExpertRecipe, ExpertSet, build_backbone,
                               check_backbone, digest, get_experts)
from distill_bench.augment import DSA, DSAConfig, default_strategy
from distill_bench.checkpoint import Checkpoint, rng_state, set_rng_state
from distill_bench.method import (DistillationMethod, MethodConfig, RealSubset, RunContext,
                                  register_method)
from distill_bench.results import config_hash
from distill_bench.synthetic import SyntheticSet
from distill_bench.zca import ZCA_EPS, whiten

logger = logging.getLogger(__name__)

# the paper's CIFAR-10 settings by ipc (PROTOCOL.md section 3)
PER_IPC = {
    1: {"syn_steps": 50, "expert_epochs": 2, "max_start_epoch": 2, "zca": True,
        "lr_img": 1000.0, "lr_lr": 1e-7},
    10: {"syn_steps": 30, "expert_epochs": 2, "max_start_epoch": 20, "zca": True,
         "lr_img": 100.0, "lr_lr": 1e-5},
    50: {"syn_steps": 30, "expert_epochs": 2, "max_start_epoch": 40, "zca": False,
         "lr_img": 1000.0, "lr_lr": 1e-5},
}
# budgets; train_epochs None means the fewest epochs the start/target draws need, plus one
PRESETS = {
    "cpu": {"num_experts": 5, "train_epochs": None, "iterations": 500},
    "paper": {"num_experts": 100, "train_epochs": 50, "iterations": 5000},
}
INITS = ("real", "noise")
PAPER_SYN_LR = 0.01
PAPER_EXPERT_BATCH = 256
MIN_EXPERT_STEPS = 10  # SGD steps per expert epoch the default batch keeps on small subsets


def table_ipc(ipc: int) -> int:
    """The tabulated ipc nearest to ``ipc`` on a log scale."""
    return min(PER_IPC, key=lambda k: abs(math.log(ipc) - math.log(k)))


@dataclass
class MTTConfig(MethodConfig):
    """Settings of trajectory matching; ``None`` fields come from the ipc table or preset."""
    preset: str = "cpu"                  # budget for unset fields: cpu | paper
    iterations: int | None = None        # matching iterations (cpu 500, paper 5000)
    num_experts: int | None = None       # expert trajectories (cpu 5, paper 100)
    train_epochs: int | None = None      # epochs per expert (cpu: max_start + M, paper 50)
    syn_steps: int | None = None         # student SGD steps per iteration (table)
    expert_epochs: int | None = None     # M: epochs between start and target (table)
    max_start_epoch: int | None = None   # start epoch drawn from [0, max_start_epoch)
    zca: bool | None = None              # ZCA-whiten the data (table)
    lr_img: float | None = None          # SGD lr of the images (table)
    lr_lr: float | None = None           # SGD lr of the step size (table)
    syn_lr_init: float = PAPER_SYN_LR    # initial student step size alpha
    min_syn_lr: float = 1e-6             # floor that keeps alpha positive
    momentum: float = 0.5                # SGD momentum of images and step size
    batch_syn: int | None = None         # synthetic images per student step (None: all)
    init: str = "real"                   # initial images: real (from the subset) | noise
    dsa: bool = True                     # DSA in matching and in expert training
    zca_eps: float = ZCA_EPS             # ZCA regulariser (Kornia, MTT: 0.1)
    zca_full_rank: bool = True           # table ZCA only from >= pixels real images
    backbone: str = "convnet"            # expert and student network
    width: int | None = None             # backbone width (None: its default, 128)
    expert_lr: float = 0.01              # expert SGD lr (no momentum)
    expert_batch: int | None = None      # real images per expert SGD step (None: rule)
    expert_storage: str = "fp32"         # snapshot dtype on disk: fp32 | fp16
    expert_seed: int | None = None       # seed of the experts (None: the cell's seed)
    checkpoint_every: int = 25           # iterations between checkpoints (0: never)

    def __post_init__(self):
        _check_choice("preset", self.preset, PRESETS)
        _check_choice("init", self.init, INITS)
        _check_choice("expert_storage", self.expert_storage, STORAGE)
        for name in ("iterations", "num_experts", "train_epochs", "syn_steps",
                     "expert_epochs", "max_start_epoch", "batch_syn", "expert_batch",
                     "width"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ValueError(f"mtt {name}={value!r} must be an integer >= 1")
        if not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 0:
            raise ValueError(f"mtt checkpoint_every={self.checkpoint_every!r} must be an "
                             f"integer >= 0 (0 disables checkpoints)")
        for name in ("lr_img", "syn_lr_init", "min_syn_lr", "zca_eps", "expert_lr"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"mtt {name}={value!r} must be positive")
        if self.lr_lr is not None and not self.lr_lr >= 0:
            raise ValueError(f"mtt lr_lr={self.lr_lr!r} must be >= 0 (0 freezes the step "
                             f"size)")
        if not self.min_syn_lr < self.syn_lr_init:
            raise ValueError(f"mtt min_syn_lr={self.min_syn_lr} must be below "
                             f"syn_lr_init={self.syn_lr_init}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"mtt momentum={self.momentum!r} must be in [0, 1)")
        self._check_epochs()

    def _check_epochs(self) -> None:
        """Targets reach snapshot ``max_start_epoch - 1 + expert_epochs``."""
        if None in (self.train_epochs, self.max_start_epoch, self.expert_epochs):
            return
        needed = self.max_start_epoch - 1 + self.expert_epochs
        if self.train_epochs < needed:
            raise ValueError(
                f"mtt train_epochs={self.train_epochs} is too short: a start epoch up to "
                f"max_start_epoch - 1 = {self.max_start_epoch - 1} plus expert_epochs = "
                f"{self.expert_epochs} needs expert snapshots up to epoch {needed}; set "
                f"train_epochs >= {needed} or lower max_start_epoch / expert_epochs")

    @classmethod
    def paper(cls, **overrides) -> "MTTConfig":
        """The paper's budget: 100 experts x 50 epochs, 5000 iterations."""
        return cls(preset="paper", **overrides)

    def resolve(self, ipc: int, num_real: int | None = None,
                pixels: int | None = None) -> "MTTConfig":
        """Every ``None`` field filled from the ipc table and the preset (checked again).

        With ``zca_full_rank``, a ``zca`` left unset stays off when the real subset has
        fewer images (``num_real``) than values per image (``pixels``): a whitening fitted
        on N < D images has rank N, scales the D - N directions it never saw by
        ``1 / sqrt(zca_eps)`` and the few it saw by far less, so test images arrive
        dominated by directions the synthetic images (drawn from that span) lack. Measured:
        mtt at (ipc 10, shots 10) on cifar10-jpeg75 with ZCA fitted on its 100 images
        evaluated at 24.90 and 25.21 % (two runs) against 32.42 % for the random subset.

        ``expert_batch`` defaults to the paper's 256, capped at ``num_real // 10`` so that
        an expert epoch on a small ``shots`` subset still takes 10 SGD steps: with one step
        per epoch (100 images, batch 256) the segment ``theta*_t -> theta*_{t+M}`` is M
        steps long, the normalised distance's denominator is tiny and matching diverges.
        """
        values = {k: v for k, v in PER_IPC[table_ipc(ipc)].items()
                  if getattr(self, k) is None}
        values.update({k: v for k, v in PRESETS[self.preset].items()
                       if getattr(self, k) is None})
        if (self.zca is None and self.zca_full_rank and values.get("zca")
                and num_real is not None and pixels is not None and num_real < pixels):
            logger.info("mtt: ZCA off (zca_full_rank): %d real images cannot fit a "
                        "whitening of %d values; set zca=true to force it", num_real, pixels)
            values["zca"] = False
        resolved = dataclasses.replace(self, **values)
        if resolved.train_epochs is None:
            resolved.train_epochs = resolved.max_start_epoch + resolved.expert_epochs
        if resolved.expert_batch is None and num_real is not None:
            resolved.expert_batch = max(1, min(PAPER_EXPERT_BATCH,
                                               num_real // MIN_EXPERT_STEPS))
        resolved._check_epochs()
        return resolved

    def expert_recipe(self) -> ExpertRecipe:
        return ExpertRecipe(backbone=self.backbone, width=self.width, lr=self.expert_lr,
                            batch_size=self.expert_batch or PAPER_EXPERT_BATCH,
                            augment="dsa" if self.dsa else "none",
                            storage=self.expert_storage)

    def is_paper_budget(self, ipc: int) -> bool:
        """Resolved at the paper's budget and its table row for a tabulated ipc."""
        if ipc not in PER_IPC:
            return False
        row = PER_IPC[ipc]
        paper = PRESETS["paper"]
        return (all(getattr(self, k) == v for k, v in row.items())
                and all((getattr(self, k) or 0) >= v for k, v in paper.items())
                and self.syn_lr_init == PAPER_SYN_LR and self.init == "real"
                and self.expert_batch in (None, PAPER_EXPERT_BATCH)
                and self.dsa and self.width is None and self.backbone == "convnet")


def _check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"mtt {name}={value!r}; choose one of {sorted(allowed)}")


def check_data(cfg: MTTConfig, real: RealSubset, ipc: int) -> None:
    """Checks that need the data and ipc; all run before any expert is trained."""
    counts = torch.bincount(real.labels, minlength=real.num_classes)
    if real.images.shape[0] == 0:
        raise ValueError(f"mtt trains experts on real images, but shots={real.shots!r} "
                         f"gives none; use shots >= 1 or 'all'")
    if cfg.init == "real" and int(counts.min()) < ipc:
        raise ValueError(f"mtt init='real' needs ipc={ipc} real images per class but "
                         f"shots={real.shots!r} gives {int(counts.min())} for some class; "
                         f"use shots >= {ipc}, 'all', or init='noise'")
    num_syn = ipc * real.num_classes
    if cfg.batch_syn is not None and cfg.batch_syn > num_syn:
        raise ValueError(f"mtt batch_syn={cfg.batch_syn} exceeds the {num_syn} synthetic "
                         f"images (ipc {ipc} x {real.num_classes} classes); use at most "
                         f"{num_syn}, or leave it unset for all")
    if cfg.zca and real.images.shape[0] < 2:
        raise ValueError(f"mtt zca=True needs at least 2 real images to fit, got "
                         f"{real.images.shape[0]}; use more shots or zca=False")
    with torch.random.fork_rng(devices=[]):
        check_backbone(build_backbone(cfg.expert_recipe(), real), cfg.backbone)


class Student:
    """A backbone evaluated at an explicit flat parameter vector (``functional_call``)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.names = [n for n, _ in model.named_parameters()]
        self.shapes = [p.shape for p in model.parameters()]
        self.numels = [p.numel() for p in model.parameters()]

    def __call__(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        chunks = flat.split(self.numels)
        params = {n: c.view(s) for n, c, s in zip(self.names, chunks, self.shapes)}
        return functional_call(self.model, params, (x,))


def trajectory_loss(student: Student, images: torch.Tensor, labels: torch.Tensor,
                    syn_lr: torch.Tensor, start: torch.Tensor, target: torch.Tensor,
                    syn_steps: int, batch_syn: int, dsa: DSA | None,
                    gen: torch.Generator) -> torch.Tensor:
    """Eq. 2 for one expert segment: ``syn_steps`` student steps from ``start`` (P,)."""
    params = start.clone().requires_grad_(True)
    batches: list[torch.Tensor] = []
    for _ in range(syn_steps):
        # mini-batches run through a fresh permutation, as in the paper's code
        if not batches:
            order = torch.randperm(images.shape[0], generator=gen, device=images.device)
            batches = list(order.split(batch_syn))
        idx = batches.pop(0)
        x = images[idx]
        if dsa is not None:
            x = dsa(x, gen)
        ce = F.cross_entropy(student(params, x), labels[idx])

        # one differentiable SGD step (Eq. 1)
        (grad,) = torch.autograd.grad(ce, params, create_graph=True)
        params = params - syn_lr * grad
    return (params - target).pow(2).sum() / (start - target).pow(2).sum()


def draw_segment(experts: ExpertSet, cfg: MTTConfig, gen: torch.Generator,
                 device: torch.device) -> tuple[int, int, torch.Tensor, torch.Tensor]:
    """An expert ``e``, a start ``t < max_start_epoch``, ``theta*_t`` and ``theta*_{t+M}``."""
    e = int(torch.randint(len(experts), (1,), generator=gen))
    t = int(torch.randint(cfg.max_start_epoch, (1,), generator=gen))
    traj = experts.trajectory(e)                                  # (epochs + 1, P)
    start = traj[t].to(device, torch.float32)
    target = traj[t + cfg.expert_epochs].to(device, torch.float32)
    return e, t, start, target


def init_images(real: RealSubset, ipc: int, init: str,
                gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``ipc`` images per class, real ones drawn from the subset or Gaussian noise."""
    labels = torch.arange(real.num_classes).repeat_interleave(ipc)  # (classes * ipc,)
    if init == "noise":
        shape = (len(labels), real.channels, real.image_size, real.image_size)
        return torch.randn(shape, generator=gen), labels
    picked = []
    for c in range(real.num_classes):
        pool = real.of_class(c)
        if len(pool) < ipc:
            raise ValueError(f"mtt init='real' needs ipc={ipc} real images per class but "
                             f"shots={real.shots} gives {len(pool)} for class {c}; use "
                             f"shots >= {ipc} or init='noise'")
        picked.append(pool[torch.randperm(len(pool), generator=gen)[:ipc]])
    return torch.cat(picked).clone(), labels


@register_method("mtt")
class MTT(DistillationMethod):
    """Matching training trajectories (Cazenavette et al., CVPR 2022)."""
    Config = MTTConfig
    extendable = ("iterations", "checkpoint_every")  # no schedule depends on the total

    @property
    def needs_real(self) -> str:  # real initialisation picks ipc real images per class
        return "ipc" if self.config.init == "real" else "some"

    def __init__(self, config: MTTConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        self._resolved: MTTConfig | None = None
        self._ipc: int | None = None

    def distill(self, real: RealSubset, ipc: int, seed: int,
                context: RunContext) -> SyntheticSet:
        cfg = self.config.resolve(ipc, num_real=real.images.shape[0],
                                  pixels=real.images[0].numel())
        check_data(cfg, real, ipc)
        self._resolved, self._ipc = cfg, ipc

        # stage 1: whiten, then experts (cached, resumable)
        if cfg.zca:
            real = whiten(real, cfg.zca_eps)
        expert_seed = seed if cfg.expert_seed is None else cfg.expert_seed
        experts = get_experts(real, cfg.expert_recipe(), cfg.num_experts, cfg.train_epochs,
                              expert_seed, context.device,
                              cfg.zca_eps if cfg.zca else None, context.progress)

        # stage 2: trajectory matching (checkpointed in the cell's workdir)
        images, labels, syn_lr, losses = self._match(cfg, real, ipc, seed, experts, context)
        context.info["experts"] = {
            "folder": str(experts.paths[0].parent), "num_experts": len(experts),
            "train_epochs": experts.epochs, "seed": expert_seed,
            "storage": cfg.expert_storage}
        context.info["matching"] = {"syn_lr": syn_lr, "first_loss": losses[0],
                                    "last_loss": losses[-1]}
        return self.make_set(real, images, labels, eval_lr=syn_lr,
                             provenance={"resolved_config": cfg.to_dict()})

    def _match(self, cfg: MTTConfig, real: RealSubset, ipc: int, seed: int,
               experts: ExpertSet, context: RunContext):
        device = context.device
        gen = torch.Generator().manual_seed(seed)                # init, expert and start
        dev_gen = torch.Generator(device).manual_seed(seed + 1)  # batches, DSA draws
        images, labels = init_images(real, ipc, cfg.init, gen)
        images = images.to(device).requires_grad_(True)          # (classes * ipc, C, H, W)
        labels = labels.to(device)
        syn_lr = torch.tensor(cfg.syn_lr_init, device=device).requires_grad_(True)
        opt_img = torch.optim.SGD([images], lr=cfg.lr_img, momentum=cfg.momentum)
        opt_lr = torch.optim.SGD([syn_lr], lr=cfg.lr_lr, momentum=cfg.momentum)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            student = Student(build_backbone(cfg.expert_recipe(), real).to(device))
        dsa = DSA(DSAConfig(strategy=default_strategy(real.channels))) if cfg.dsa else None
        batch_syn = cfg.batch_syn or images.shape[0]

        # resume
        fixed = {k: v for k, v in cfg.to_dict().items() if k not in self.extendable}
        key = config_hash({"config": fixed, "ipc": ipc, "seed": seed,
                           "data_checksum": real.data_checksum,
                           "indices": digest(real.indices)})
        ckpt = context.checkpoint("mtt.pt", cfg.checkpoint_every, key)
        state = ckpt.load()
        done, losses, saved_at = 0, [], None
        if state is not None and state["iteration"] > cfg.iterations:
            logger.warning("mtt: checkpoint %s is at iteration %d, past iterations=%d; "
                           "starting afresh", ckpt.path, state["iteration"], cfg.iterations)
            state = None
        if state is not None:
            with torch.no_grad():
                images.copy_(state["syn_images"])
                syn_lr.copy_(state["syn_lr"])
            opt_img.load_state_dict(state["opt_img"])
            opt_lr.load_state_dict(state["opt_lr"])
            set_rng_state(state["rng"], gen)
            dev_gen.set_state(state["dev_gen"])
            done, losses, saved_at = state["iteration"], state["losses"], state["iteration"]

        steps = range(done, cfg.iterations)
        if context.progress:
            from tqdm.auto import tqdm
            steps = tqdm(steps, desc="mtt", unit="it", initial=done, total=cfg.iterations)
        started, first = time.time(), done
        for it in steps:
            e, t, start, target = draw_segment(experts, cfg, gen, device)
            loss = trajectory_loss(student, images, labels, syn_lr, start, target,
                                   cfg.syn_steps, batch_syn, dsa, dev_gen)
            opt_img.zero_grad(set_to_none=True)
            opt_lr.zero_grad(set_to_none=True)
            if torch.isfinite(loss):
                loss.backward()
            where = dict(iteration=it + 1, loss=loss, expert=e, start_epoch=t)
            self._check_finite(cfg, images, syn_lr, ckpt, saved_at, **where)

            # update images and step size; keep the step size positive
            opt_img.step()
            opt_lr.step()
            with torch.no_grad():
                syn_lr.clamp_(min=cfg.min_syn_lr)
            losses.append(loss.item())

            done = it + 1
            if ckpt.due(done) or (done == cfg.iterations and cfg.checkpoint_every):
                ckpt.save({"iteration": done, "syn_images": images.detach().cpu(),
                           "syn_lr": syn_lr.detach().cpu(), "opt_img": opt_img.state_dict(),
                           "opt_lr": opt_lr.state_dict(), "rng": rng_state(gen),
                           "dev_gen": dev_gen.get_state(), "losses": losses})
                saved_at = done  # a later failure leaves this file as it is
            if done % context.log_every == 0 or done == cfg.iterations:
                rate = (time.time() - started) / (done - first)
                logger.info("mtt iteration %d/%d: loss %.4f, syn_lr %.5f, %.2f s/it",
                            done, cfg.iterations, losses[-1], syn_lr.item(), rate)
        if not losses:
            raise RuntimeError("mtt ran no iteration; iterations must be >= 1")
        return images.detach(), labels, syn_lr.item(), losses

    @staticmethod
    def _check_finite(cfg: MTTConfig, images: torch.Tensor, syn_lr: torch.Tensor,
                      ckpt: Checkpoint, saved_at: int | None, iteration: int,
                      loss: torch.Tensor, expert: int, start_epoch: int) -> None:
        """Stop before a non-finite loss or gradient can reach the images or step size."""
        finite = [bool(p.grad is not None and torch.isfinite(p.grad).all())
                  for p in (images, syn_lr)]
        if torch.isfinite(loss) and all(finite):
            return
        kept = (f"checkpoint {ckpt.path} (iteration {saved_at}) is intact"
                if saved_at else "no checkpoint was written yet")
        raise FloatingPointError(
            f"mtt diverged at iteration {iteration}/{cfg.iterations}: loss {loss.item()}, "
            f"finite gradients (images, syn_lr) {finite}, syn_lr {syn_lr.item():.4g}, "
            f"max |syn_images| {images.detach().abs().max().item():.4g}, expert {expert}, "
            f"start epoch {start_epoch}. Nothing was updated; the {kept}. Lower lr_img "
            f"({cfg.lr_img}), lr_lr ({cfg.lr_lr}) or syn_steps ({cfg.syn_steps}).")

    def budget(self) -> dict:
        """Experts, epochs, iterations and steps used, and whether they are the paper's."""
        cfg = self._resolved or self.config
        keys = ("preset", "num_experts", "train_epochs", "iterations", "syn_steps",
                "batch_syn", "expert_epochs", "max_start_epoch", "expert_batch")
        out = {k: getattr(cfg, k) for k in keys}
        out["batch_syn"] = cfg.batch_syn or "all"
        out["paper_budget"] = (self._ipc is not None and cfg.is_paper_budget(self._ipc))
        return out
