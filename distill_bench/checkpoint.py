"""Checkpoints for long distillations: save state at intervals, resume after a crash.

A method keeps everything its loop needs (tensors, optimiser states, RNG states, the
iteration) in one dict and hands it to ``Checkpoint.save``; on start it calls ``load``. The
file is replaced atomically, so an interruption leaves the previous checkpoint intact.
``rng_state``/``set_rng_state`` capture a private generator with torch's global RNG, so a
resumed run draws the same numbers as an uninterrupted one.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


class Checkpoint:
    """One resumable state file.

    Args:
        path: the checkpoint file (its folder is created).
        every: iterations between saves (0 disables saving).
        key: identifies the configuration; a checkpoint with another key is ignored, so a
            changed config never resumes from a stale state.

    Each save also records the seconds spent on the state so far, this process's plus the
    ``earlier_seconds`` of the processes before it (read by ``load``), so that a resumed
    distillation reports the time its result cost, not only its last stretch.
    """

    def __init__(self, path: str | os.PathLike, every: int = 50, key: str = ""):
        self.path = Path(path)
        self.every = every
        self.key = key
        self.earlier_seconds = 0.0   # spent by earlier processes on the loaded state
        self._opened = time.monotonic()

    def load(self) -> dict | None:
        if not self.path.exists():
            return None
        try:
            blob = torch.load(self.path, weights_only=False)
        except Exception as err:
            logger.warning("ignoring unreadable checkpoint %s (%s)", self.path, err)
            return None
        if blob.get("_key") != self.key:
            logger.warning("ignoring checkpoint %s: written for another configuration",
                           self.path)
            return None
        self.earlier_seconds = float(blob.get("_seconds", 0.0))
        logger.info("resuming from %s (iteration %s, %.0f s spent before)", self.path,
                    blob.get("iteration"), self.earlier_seconds)
        return blob

    def due(self, iteration: int) -> bool:
        return self.every > 0 and iteration > 0 and iteration % self.every == 0

    def save(self, state: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        seconds = self.earlier_seconds + time.monotonic() - self._opened
        torch.save({**state, "_key": self.key, "_seconds": seconds}, tmp)
        os.replace(tmp, self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def rng_state(generator: torch.Generator | None = None) -> dict:
    state = {"torch": torch.get_rng_state()}
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def set_rng_state(state: dict, generator: torch.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])
