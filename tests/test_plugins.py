"""A method from another package reaches ``distill-bench run`` and the leaderboard.

The test writes a small external package (its own ``pyproject.toml`` declaring a method in
the entry-point group ``distill_bench.methods``) and makes it importable the way an install
would, without touching the shared environment: the package folder goes on PYTHONPATH,
next to a ``.dist-info`` folder with the ``entry_points.txt`` that ``pip install`` would
write. ``importlib.metadata`` finds distributions on ``sys.path``, so the harness discovers
the method exactly as it would after ``pip install``; no harness file changes.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from distill_bench.registry import Registry, UnknownNameError
from tiny_data import tiny_env

PACKAGE = "db_class_mean"
METHOD = "class-mean"

MODULE = '''\
"""``class-mean``: each class's mean real image, plus a little noise per copy."""
from dataclasses import dataclass

import torch

from distill_bench import DistillationMethod, MethodConfig, register_method


@dataclass
class ClassMeanConfig(MethodConfig):
    """Settings of the class-mean method."""
    noise: float = 0.1      # std of Gaussian noise added to each copy (normalised space)


@register_method("class-mean")
class ClassMean(DistillationMethod):
    """Mean real image per class, repeated ipc times with noise (a plugin example)."""
    Config = ClassMeanConfig

    def distill(self, real, ipc, seed, context):
        if real.images.shape[0] == 0:
            raise ValueError("class-mean needs real images: use shots >= 1")
        gen = torch.Generator().manual_seed(seed)
        means = torch.stack([real.of_class(c).mean(0) for c in range(real.num_classes)])
        images = means.repeat_interleave(ipc, 0)
        images = images + self.config.noise * torch.randn(images.shape, generator=gen)
        labels = torch.arange(real.num_classes).repeat_interleave(ipc)
        return self.make_set(real, images, labels)
'''

PYPROJECT = f'''\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "{PACKAGE.replace("_", "-")}"
version = "0.1"
dependencies = ["distill-bench"]

[project.entry-points."distill_bench.methods"]
{METHOD} = "{PACKAGE}:ClassMean"
'''


def write_plugin(root: Path) -> Path:
    """The package source and the metadata an install of it would leave; returns the
    folder to put on the path."""
    (root / PACKAGE).mkdir(parents=True)
    (root / PACKAGE / "__init__.py").write_text(MODULE)
    (root / "pyproject.toml").write_text(PYPROJECT)
    dist = root / f"{PACKAGE}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(textwrap.dedent(f"""\
        Metadata-Version: 2.1
        Name: {PACKAGE.replace("_", "-")}
        Version: 0.1
        """))
    (dist / "entry_points.txt").write_text(
        f"[distill_bench.methods]\n{METHOD} = {PACKAGE}:ClassMean\n")
    return root


def distill_bench_command() -> list[str]:
    script = Path(sys.executable).with_name("distill-bench")
    if script.exists():
        return [str(script)]
    found = shutil.which("distill-bench")
    return [found] if found else [sys.executable, "-m", "distill_bench.cli"]


@pytest.fixture
def plugin_env(tmp_path):
    site = write_plugin(tmp_path / "plugin")
    env = {**os.environ, **tiny_env(tmp_path, train_per_class=4, test_per_class=5)}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return env


def run(args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(distill_bench_command() + args, env=env, cwd=cwd, text=True,
                          capture_output=True, timeout=300)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.mark.slow  # four fresh interpreters: about 15 s of CPU
def test_external_method_runs_and_lands_in_the_leaderboard(plugin_env, tmp_path):
    listed = run(["list", "methods"], plugin_env, tmp_path).stdout
    assert METHOD in listed and "plugin example" in listed

    results = tmp_path / "results"
    cell = ["--dataset", "mnist", "--ipc", "1", "--shots", "2", "--protocol", "quick",
            "--epochs", "2", "--num-eval-runs", "1", "--results-dir", str(results),
            "--no-progress"]
    run(["run", "--method", "random"] + cell, plugin_env, tmp_path)
    printed = run(["run", "--method", METHOD, "--set", "noise=0.05"] + cell, plugin_env,
                  tmp_path).stdout
    assert f"| {METHOD} | mnist | 1 | 2 | convnet | quick |" in printed  # the leaderboard
    board = pd.read_csv(results / "leaderboard.csv", dtype={"shots": str})
    row = board[board["method"] == METHOD].iloc[0]
    assert row["n_runs"] == 1 and row["shots"] == "2" and row["backbone"] == "convnet"
    assert row["random_acc"] == board[board["method"] == "random"].iloc[0]["acc_mean"]
    assert row["gain_over_random"] == pytest.approx(row["acc_mean"] - row["random_acc"],
                                                    abs=0.02)
    assert METHOD in (results / "README.md").read_text()
    saved = list((results / "configs").glob(f"{METHOD}-*.yaml"))
    assert len(saved) == 1 and "noise: 0.05" in saved[0].read_text()


def test_a_broken_plugin_is_named_not_fatal(tmp_path, monkeypatch):
    site = write_plugin(tmp_path / "plugin")
    (site / PACKAGE / "__init__.py").write_text("raise ImportError('missing dependency')\n")
    monkeypatch.syspath_prepend(str(site))
    methods = Registry("method", entry_point_group="distill_bench.methods")  # a fresh scan
    assert "random" in methods.list() and METHOD not in methods.list()
    with pytest.raises(UnknownNameError, match=f"{PACKAGE}:ClassMean.*missing dependency"):
        methods.get(METHOD)
