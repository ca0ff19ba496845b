"""Tests of the matching baselines ``dc``, ``dsa`` and ``dm`` on a tiny MNIST subset."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from baselines.dc import DC, DSA, DCConfig, dc_loops, match_distance
from baselines.dm import DM, DMConfig
from baselines.matching import freeze_batchnorm
from distill_bench.budget import real_subset
from distill_bench.method import RunContext, create_method, get_method
from distill_bench.networks import create_backbone

METHODS = ("dc", "dsa", "dm")
TINY = {"iterations": 2, "width": 16}  # seconds-long runs on one core


@pytest.fixture(scope="module")
def real(mnist):
    return real_subset(mnist, shots=2, seed=0)


def context(workdir: Path) -> RunContext:
    return RunContext(torch.device("cpu"), workdir, progress=False, log_every=1)


def distill(name: str, real, workdir: Path, ipc: int = 1, seed: int = 0, **options):
    method = create_method(name, **{**TINY, **options})
    return method, method.distill(real, ipc, seed, context(workdir))


# --- every method end to end -----------------------------------------------------------

@pytest.mark.parametrize("name", METHODS)
def test_method_changes_images_and_returns_a_valid_set(name, real, tmp_path):
    method, start = distill(name, real, tmp_path / "init", iterations=0)
    _, syn = distill(name, real, tmp_path / "run")
    assert syn.syn_images.shape == (10, 1, 28, 28)
    assert torch.equal(syn.syn_labels, torch.arange(10))
    assert torch.isfinite(syn.syn_images).all()
    assert not torch.allclose(syn.syn_images, start.syn_images)
    assert syn.provenance["method"] == name and syn.provenance["shots"] == 2
    if method.config.init == "real":  # each starting image is a real image of its class
        for c in range(10):
            pool = real.of_class(c)
            assert any(torch.equal(start.syn_images[c], x) for x in pool)


@pytest.mark.parametrize("name", METHODS)
def test_distillation_leaves_the_global_rng_alone(name, real, tmp_path):
    before = torch.get_rng_state()
    distill(name, real, tmp_path, iterations=1)
    assert torch.equal(torch.get_rng_state(), before)


def test_batchnorm_backbone_runs(real, tmp_path):
    for name in ("dc", "dm"):
        _, syn = distill(name, real, tmp_path / name, backbone="convnet_bn")
        assert torch.isfinite(syn.syn_images).all()


# --- the losses -------------------------------------------------------------------------

def test_match_distance_is_channelwise_one_minus_cosine_ignoring_biases():
    g = torch.Generator().manual_seed(0)
    a = [torch.randn(4, 3, 3, 3, generator=g), torch.randn(4, generator=g),
         torch.randn(5, 64, generator=g)]
    b = [torch.randn_like(t) for t in a]
    expected = sum((1 - F.cosine_similarity(x.flatten(1), y.flatten(1), dim=1)).sum()
                   for x, y in zip(a, b) if x.dim() > 1)
    assert torch.allclose(match_distance(a, b), expected, atol=1e-5)
    assert match_distance(a, a).abs() < 1e-4
    changed_bias = [a[0], a[1] + 1, a[2]]
    assert torch.allclose(match_distance(changed_bias, a), match_distance(a, a))


@pytest.mark.parametrize("name", METHODS)
def test_steps_on_a_fixed_network_reduce_the_loss(name, real):
    method = create_method(name, width=16, dsa_strategy="none")
    run = method._start(real, 1, 0, torch.device("cpu"))
    net = run.new_network()
    run.new_network = lambda: copy.deepcopy(net)
    losses = [method.iteration(run) for _ in range(6)]
    assert losses[-1] < losses[0], losses


# --- loops, configs and budgets ------------------------------------------------------------

def test_dc_loops_follow_the_table_and_a_rule_elsewhere():
    assert [dc_loops(i) for i in (1, 10, 50)] == [(1, 1), (10, 50), (50, 10)]
    assert dc_loops(2) == (2, 50) and dc_loops(15) == (15, 38) and dc_loops(100) == (100, 10)
    assert all(dc_loops(i)[0] == i for i in range(1, 120))
    with pytest.raises(ValueError, match="ipc=0"):
        dc_loops(0)


def test_defaults_are_the_papers_budgets():
    dc, dsa, dm = DC(), DSA(), DM()
    assert (dc.config.iterations, dc.config.batch_real, dc.config.lr_img) == (1000, 256, 0.1)
    assert (dc.config.init, dsa.config.init, dm.config.init) == ("noise", "real", "real")
    assert (dc.config.dsa_strategy, dsa.config.dsa_strategy) == ("none", "auto")
    assert (dm.config.iterations, dm.config.batch_real, dm.config.lr_img) == (20000, 256, 1.0)
    assert dc.budget()["paper_budget"] and dm.budget()["paper_budget"]
    assert not DM(iterations=5).budget()["paper_budget"]
    assert not DC(batch_real=64).budget()["paper_budget"]
    assert get_method("dsa") is DSA and get_method("dc") is DC and get_method("dm") is DM


def test_budget_reports_the_loops_used(real, tmp_path):
    method, _ = distill("dc", real, tmp_path, ipc=1, iterations=1)
    budget = method.budget()
    assert (budget["outer_loop"], budget["inner_loop"], budget["iterations"]) == (1, 1, 1)
    assert not budget["paper_budget"]
    assert DC(outer_loop=5)._loops_below_rule(10)
    assert DC(inner_loop=5)._loops_below_rule(10)
    assert not DC(inner_loop=5)._loops_below_rule(1)  # one round: the inner loop never runs


def test_bad_options_raise_with_the_allowed_values():
    with pytest.raises(ValueError, match="init='zeros'"):
        DCConfig(init="zeros")
    with pytest.raises(ValueError, match="iterations=-1"):
        DMConfig(iterations=-1)
    with pytest.raises(ValueError, match="allowed"):
        create_method("dm", lr=3)
    with pytest.raises(ValueError, match="'blur'"):
        DMConfig(dsa_strategy="color_blur")


# --- the shots budget ---------------------------------------------------------------------

@pytest.mark.parametrize("name", METHODS)
def test_zero_shots_is_a_clear_error(name, mnist, tmp_path):
    with pytest.raises(ValueError, match="shots=0"):
        distill(name, real_subset(mnist, shots=0, seed=0), tmp_path)


def test_real_init_needs_ipc_shots_and_noise_init_does_not(real, tmp_path):
    with pytest.raises(ValueError, match=r"ipc=3 .* shots=2 .*init='noise'"):
        distill("dsa", real, tmp_path / "a", ipc=3)
    _, syn = distill("dsa", real, tmp_path / "b", ipc=3, init="noise", iterations=1,
                     inner_loop=1)
    assert syn.syn_images.shape[0] == 30


# --- checkpoints ------------------------------------------------------------------------------

class Interrupted(Exception):
    pass


def interrupt_after(method, calls: int) -> list[int]:
    """Make ``method.iteration`` raise on call ``calls + 1``; returns the call counter."""
    count = [0]
    original = method.iteration

    def wrapped(run):
        if count[0] == calls:
            raise Interrupted
        count[0] += 1
        return original(run)

    method.iteration = wrapped
    return count


@pytest.mark.parametrize("name", METHODS)
def test_interrupted_then_resumed_run_equals_an_uninterrupted_one(name, real, tmp_path):
    options = {**TINY, "iterations": 4, "checkpoint_every": 1}
    _, whole = distill(name, real, tmp_path / "whole", **options)

    broken = create_method(name, **options)
    interrupt_after(broken, 2)
    with pytest.raises(Interrupted):
        broken.distill(real, 1, 0, context(tmp_path / "resumed"))
    resumed = create_method(name, **options)
    count = interrupt_after(resumed, 99)
    syn = resumed.distill(real, 1, 0, context(tmp_path / "resumed"))
    assert count[0] == 2  # only the missing iterations ran
    assert torch.equal(syn.syn_images, whole.syn_images)


@pytest.mark.parametrize("name", METHODS)
def test_a_longer_run_continues_a_finished_shorter_one(name, real, tmp_path):
    _, whole = distill(name, real, tmp_path / "whole", iterations=4)
    distill(name, real, tmp_path / "grow", iterations=2)
    _, grown = distill(name, real, tmp_path / "grow", iterations=4)
    assert torch.equal(grown.syn_images, whole.syn_images)
    # a changed setting never resumes from another configuration's state
    _, other = distill(name, real, tmp_path / "grow", iterations=4, lr_img=0.5)
    _, fresh = distill(name, real, tmp_path / "fresh", iterations=4, lr_img=0.5)
    assert torch.equal(other.syn_images, fresh.syn_images)


def test_dm_joint_forward_matches_class_by_class(real, tmp_path, monkeypatch):
    """Instance-norm embeddings are per image: batching classes together changes nothing."""
    import baselines.dm as dm
    _, start = distill("dm", real, tmp_path / "start", iterations=0)
    _, joint = distill("dm", real, tmp_path / "joint", iterations=3, batch_real=2)
    monkeypatch.setattr(dm, "JOINT_MAX_SYN", 0)   # every class in its own forward
    monkeypatch.setattr(dm, "REAL_CHUNK", 1)      # and real images one at a time
    _, per_class = distill("dm", real, tmp_path / "per_class", iterations=3, batch_real=2)
    assert not torch.allclose(joint.syn_images, start.syn_images)
    torch.testing.assert_close(joint.syn_images, per_class.syn_images, rtol=1e-4, atol=1e-5)


# --- BatchNorm ------------------------------------------------------------------------------

def test_freeze_batchnorm_uses_the_real_batch_statistics():
    torch.manual_seed(0)
    net = create_backbone("convnet_bn", 10, 1, 28, width=8)
    images = torch.randn(32, 1, 28, 28)
    freeze_batchnorm(net, images)
    bn = net.features[1]
    assert not bn.training
    with torch.no_grad():
        hidden = net.features[0](images)
    assert torch.allclose(bn.running_mean, hidden.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, hidden.var(dim=(0, 2, 3)), rtol=1e-3)
