"""Checkpoints: atomic state files that carry the time spent on a state across processes."""
from pathlib import Path

import torch

from distill_bench import checkpoint as checkpoint_module
from distill_bench.method import RunContext


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_resumed_state_reports_the_time_spent_before(tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(checkpoint_module.time, "monotonic", clock)
    first = RunContext(torch.device("cpu"), tmp_path)
    ckpt = first.checkpoint("state.pt", every=1, key="k")
    assert ckpt.load() is None and first.resumed_seconds == 0.0
    clock.now += 30.0
    ckpt.save({"iteration": 3})                    # 30 s of work behind this state
    clock.now += 500.0                             # lost work after the save: not counted

    second = RunContext(torch.device("cpu"), tmp_path)
    resumed = second.checkpoint("state.pt", every=1, key="k")
    assert resumed.load()["iteration"] == 3
    assert second.resumed_seconds == 30.0
    clock.now += 20.0
    resumed.save({"iteration": 6})
    third = RunContext(torch.device("cpu"), tmp_path).checkpoint("state.pt", 1, key="k")
    third.load()
    assert third.earlier_seconds == 50.0           # 30 + 20, across two processes
    # another configuration's state is ignored, and so is its time
    other = RunContext(torch.device("cpu"), tmp_path)
    assert other.checkpoint("state.pt", 1, key="other").load() is None
    assert other.resumed_seconds == 0.0
    assert Path(tmp_path / "state.pt").exists()
