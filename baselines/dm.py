"""``dm``: dataset condensation with distribution matching.

Zhao & Bilen, "Dataset Condensation with Distribution Matching", WACV 2023, eq. 5. Each
iteration draws a fresh randomly initialised ConvNet, which is never trained; for every
class c, a real batch (256) and the class's synthetic images pass through one shared
siamese DSA draw and the network's embedding ``model.embed`` (the flattened penultimate
features), and the loss is

    sum_c || mean(embed(A(x_real_c))) - mean(embed(A(x_syn_c))) ||^2,

minimised by one SGD step (lr_img 1, momentum 0.5) on the images per iteration, from real
initialisation, for 20,000 iterations.

BatchNorm backbones embed all classes in one batch (real and synthetic separately), as the
reference does, so the batch statistics are not those of a single class. Backbones without
BatchNorm embed each image on its own, so the loss does not depend on how images are
batched: the reference embeds class by class; we embed all classes in one forward while the
synthetic graph is small (``JOINT_MAX_SYN`` images), which on a CPU avoids the slow path
PyTorch takes for convolutions of a batch of one (one shot, ipc 1), and class by class
beyond that to bound memory. Real images are embedded without a graph, in chunks.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from baselines.matching import MatchingConfig, MatchingMethod, MatchingRun, has_batchnorm
from distill_bench.method import register_method


JOINT_MAX_SYN = 1000   # synthetic images up to which all classes share one forward
REAL_CHUNK = 1024      # real images per gradient-free forward


@dataclass
class DMConfig(MatchingConfig):
    """DM's settings; the defaults are the paper's (20,000 iterations, batch_real 256)."""
    iterations: int = 20000         # iterations, each with a fresh network
    lr_img: float = 1.0             # SGD learning rate on the pixels
    init: str = "real"              # DM initialises from real images
    dsa_strategy: str = "auto"      # the dataset's DSA strategy (digits: no flip)
    checkpoint_every: int = 100     # iterations between saved states (0: never)


@register_method("dm")
class DM(MatchingMethod):
    """Distribution matching of mean embeddings (Zhao & Bilen, WACV 2023)."""
    Config = DMConfig
    PAPER_BUDGET = {"iterations": 20000, "batch_real": 256}

    def iteration(self, run: MatchingRun) -> float:
        net = run.new_network()
        net.train()
        for p in net.parameters():
            p.requires_grad_(False)
        batches = [self._class_batches(run, c) for c in range(run.num_classes)]

        run.optimizer.zero_grad(set_to_none=True)
        batchnorm = has_batchnorm(net)
        if batchnorm or run.syn_images.shape[0] <= JOINT_MAX_SYN:
            loss = self._joint_loss(net, batches, batchnorm)
            loss.backward(inputs=[run.syn_images])
            total = loss.item()
        else:
            # class by class: the same gradient, one class's graph in memory at a time
            total = 0.0
            for x_real, x_syn in batches:
                loss = self._joint_loss(net, [(x_real, x_syn)], batchnorm)
                loss.backward(inputs=[run.syn_images])
                total += loss.item()
        run.optimizer.step()
        return total / run.num_classes

    def _class_batches(self, run: MatchingRun,
                       c: int) -> tuple[torch.Tensor, torch.Tensor]:
        x_real = run.pools.draw(c, self.config.batch_real, run.generator)
        return run.siamese_pair(x_real, run.syn_of_class(c))

    @staticmethod
    def _joint_loss(net: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]],
                    batchnorm: bool) -> torch.Tensor:
        """Sum over classes of the squared distance of mean embeddings (eq. 5)."""
        reals = torch.cat([r for r, _ in batches])
        syns = torch.cat([s for _, s in batches])
        # BatchNorm needs the whole real batch at once for its statistics
        chunk = len(reals) if batchnorm else REAL_CHUNK
        with torch.no_grad():                                 # (sum n_real, D)
            emb_real = torch.cat([net.embed(r) for r in reals.split(chunk)])
        emb_syn = net.embed(syns)                             # (sum n_syn, D)
        real_means = [e.mean(0) for e in emb_real.split([len(r) for r, _ in batches])]
        syn_means = [e.mean(0) for e in emb_syn.split([len(s) for _, s in batches])]
        return sum(((m_r - m_s) ** 2).sum() for m_r, m_s in zip(real_means, syn_means))
