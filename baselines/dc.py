"""``dc`` and ``dsa``: dataset condensation by gradient matching.

DC (Zhao, Mopuri & Bilen, "Dataset Condensation with Gradient Matching", ICLR 2021,
Algorithm 1) and DSA (Zhao & Bilen, "Dataset Condensation with Differentiable Siamese
Augmentation", ICML 2021). Each iteration draws a fresh random ConvNet and runs
``outer_loop`` rounds of:

1. for every class c, the gradient of the cross-entropy on a real class batch (256) and on
   the class's synthetic images (DSA: both under one shared augmentation draw);
2. one SGD step (lr 0.1, momentum 0.5) on the images against the distance of eq. 10,
   ``d(A, B) = sum_layers sum_i (1 - cos(A_i, B_i))`` over each layer's output channels
   ``i`` (a conv weight (out, in, h, w) is read as ``out`` rows; 1-D parameters, i.e.
   biases and norm parameters, are left out);
3. (all rounds but the last) ``inner_loop`` epochs of SGD (lr 0.01) of the network on the
   synthetic set (DSA: with per-image augmentation).

Loop counts (DC's table, ``PAPER_LOOPS``): ipc 1 -> (1, 1), 10 -> (10, 50), 20 -> (20, 25),
30 -> (30, 20), 40 -> (40, 15), 50 -> (50, 10). For any other ipc we keep
``outer_loop = ipc`` (the table's own rule) and interpolate ``inner_loop`` linearly in ipc
between the table's points from 10 to 50, holding 50 below ipc 10 and 10 above ipc 50
(e.g. ipc 2 -> (2, 50), 15 -> (15, 38), 100 -> (100, 10)). With one outer round the inner
loop never runs, so its value at ipc 1 does not matter.

BatchNorm backbones: before each round the BatchNorm statistics are set from 16 real images
per class and frozen while matching, as DC does (see ``matching.freeze_batchnorm``); the
default ConvNet uses instance norm and needs none of this.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from baselines.matching import (BN_REAL_PER_CLASS, MatchingConfig, MatchingMethod,
                                MatchingRun, freeze_batchnorm, has_batchnorm, train_network)
from distill_bench.method import register_method

PAPER_LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15),
               50: (50, 10)}


@dataclass
class DCConfig(MatchingConfig):
    """DC's settings; the defaults are the paper's (1000 iterations, batch_real 256)."""
    iterations: int = 1000          # outer iterations, each with a fresh network
    lr_img: float = 0.1             # SGD learning rate on the pixels
    lr_net: float = 0.01            # SGD learning rate of the inner network training
    batch_train: int = 256          # minibatch of the inner network training
    init: str = "noise"             # DC's default; "real" also works
    dsa_strategy: str = "none"      # DC matches without augmentation
    outer_loop: int | None = None   # rounds per iteration (None: the ipc rule)
    inner_loop: int | None = None   # network epochs per round (None: the ipc rule)

    def __post_init__(self):
        super().__post_init__()
        for name in ("outer_loop", "inner_loop"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ValueError(f"{name}={value!r} must be a positive integer or None "
                                 f"(None: the ipc rule)")
        if not self.lr_net > 0:
            raise ValueError(f"lr_net={self.lr_net} must be > 0")


@dataclass
class DSAMethodConfig(DCConfig):
    """DSA's settings: DC's plus siamese augmentation and real initialisation."""
    init: str = "real"              # DSA initialises from real images
    dsa_strategy: str = "auto"      # the dataset's DSA strategy (digits: no flip)


@register_method("dc")
class DC(MatchingMethod):
    """Gradient matching (Zhao et al., ICLR 2021), noise initialisation."""
    Config = DCConfig
    PAPER_BUDGET = {"iterations": 1000, "batch_real": 256}

    def loops(self, ipc: int) -> tuple[int, int]:
        outer, inner = dc_loops(ipc)
        cfg = self.config
        return cfg.outer_loop or outer, cfg.inner_loop or inner

    def describe_loops(self, ipc: int) -> dict:
        outer, inner = self.loops(ipc)
        return {"outer_loop": outer, "inner_loop": inner,
                "batch_train": self.config.batch_train}

    def _loops_below_rule(self, ipc: int | None) -> bool:
        if ipc is None:
            return False
        rule, used = dc_loops(ipc), self.loops(ipc)
        return used[0] < rule[0] or (used[0] > 1 and used[1] < rule[1])

    def iteration(self, run: MatchingRun) -> float:
        cfg = self.config
        outer, inner = self.loops(run.ipc)
        net = run.new_network()
        net.train()
        params = [p for p in net.parameters() if p.requires_grad]
        net_optimizer = torch.optim.SGD(net.parameters(), lr=cfg.lr_net)
        batchnorm = has_batchnorm(net)
        total = 0.0
        for round_ in range(outer):
            if batchnorm:
                freeze_batchnorm(net, torch.cat([run.pools.draw(c, BN_REAL_PER_CLASS,
                                                                run.generator)
                                                 for c in range(run.num_classes)]))

            # match gradients class by class; sum the images' gradient over classes
            run.optimizer.zero_grad(set_to_none=True)
            for c in range(run.num_classes):
                loss = self._class_loss(run, net, params, c)
                loss.backward(inputs=[run.syn_images])
                total += loss.item()
            run.optimizer.step()
            if round_ == outer - 1:
                break

            # train the network on the current synthetic set
            train_network(net, net_optimizer, run.syn_images.detach(), run.syn_labels,
                          inner, cfg.batch_train, run.generator, run.augment)
        return total / (run.num_classes * outer)

    def _class_loss(self, run: MatchingRun, net: torch.nn.Module,
                    params: list[torch.Tensor], c: int) -> torch.Tensor:
        x_real = run.pools.draw(c, self.config.batch_real, run.generator)
        x_syn = run.syn_of_class(c)
        x_real, x_syn = run.siamese_pair(x_real, x_syn)
        y_real = torch.full((x_real.shape[0],), c, device=run.device)
        y_syn = torch.full((x_syn.shape[0],), c, device=run.device)

        loss_real = F.cross_entropy(net(x_real), y_real)
        grads_real = [g.detach() for g in torch.autograd.grad(loss_real, params)]
        loss_syn = F.cross_entropy(net(x_syn), y_syn)
        grads_syn = torch.autograd.grad(loss_syn, params, create_graph=True)
        return match_distance(list(grads_syn), grads_real)


@register_method("dsa")
class DSA(DC):
    """DC with differentiable siamese augmentation (Zhao & Bilen, ICML 2021)."""
    Config = DSAMethodConfig


def dc_loops(ipc: int) -> tuple[int, int]:
    """(outer_loop, inner_loop) for ``ipc``: DC's table, else the rule above."""
    if isinstance(ipc, bool) or not isinstance(ipc, int) or ipc < 1:
        raise ValueError(f"ipc={ipc!r} must be a positive integer")
    if ipc in PAPER_LOOPS:
        return PAPER_LOOPS[ipc]
    points = sorted((k, v[1]) for k, v in PAPER_LOOPS.items() if k >= 10)
    if ipc <= points[0][0]:
        return ipc, points[0][1]
    if ipc >= points[-1][0]:
        return ipc, points[-1][1]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= ipc <= x1:
            return ipc, round(y0 + (y1 - y0) * (ipc - x0) / (x1 - x0))
    raise AssertionError("unreachable: ipc lies between the table's points")


def match_distance(grads_syn: list[torch.Tensor],
                   grads_real: list[torch.Tensor]) -> torch.Tensor:
    """DC's eq. 10: sum over layers and output channels of 1 - cosine similarity."""
    total = grads_syn[0].new_zeros(())
    for g_syn, g_real in zip(grads_syn, grads_real):
        if g_syn.dim() == 1:  # biases, norm scales: ignored, as in DC
            continue
        a = g_syn.reshape(g_syn.shape[0], -1)   # (out, rest)
        b = g_real.reshape(g_real.shape[0], -1)
        cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-6)
        total = total + (1 - cos).sum()
    return total
