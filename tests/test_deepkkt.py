"""DeepKKT: DSV synthesis and selection against a small teacher, on CPU in seconds."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from distill_bench.budget import real_subset
from distill_bench.method import RunContext, create_method
from distill_bench.networks import BACKBONES, ConvNet
from methods.deepkkt import losses
from methods.deepkkt.method import DeepKKTConfig, kkt_augment

TINY = "convnet_w16_test"
if TINY not in BACKBONES:
    BACKBONES.register(TINY, lambda nc, ch=3, size=32, **kw: ConvNet(nc, ch, size, width=16))


@pytest.fixture(scope="module")
def small_data(mnist):
    """600 MNIST training images: enough for a teacher that is right most of the time."""
    return dataclasses.replace(mnist, train_images=mnist.train_images[:600],
                               train_labels=mnist.train_labels[:600],
                               test_images=mnist.test_images[:500],
                               test_labels=mnist.test_labels[:500],
                               checksum="test600-" + mnist.checksum[:12])


@pytest.fixture()
def context(small_data, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_BENCH_TEACHERS", str(tmp_path / "teachers"))
    return RunContext(torch.device("cpu"), tmp_path / "work", teacher_data=lambda: small_data,
                      artifacts_dir=tmp_path / "artifacts")


TINY_OPTIONS = dict(teacher_backbone=TINY, teacher_epochs=3, iterations=30, log_every=10,
                    candidates_per_class=2, lr_images=0.05)


def test_synthesis_satisfies_the_conditions_it_optimises(small_data, context):
    real = real_subset(small_data, 0, seed=0)  # zero-shot
    method = create_method("deepkkt", **TINY_OPTIONS)
    syn = method.distill(real, ipc=1, seed=0, context=context)

    assert syn.syn_images.shape == (10, 1, 28, 28)
    assert sorted(syn.syn_labels.tolist()) == list(range(10))
    lambdas = syn.extras["lambdas"]
    assert (lambdas >= 0).all()                                       # dual feasibility
    info = context.info["deepkkt"]
    assert info["dsv_correct_fraction"] == 1.0                        # primal feasibility
    assert info["stationarity_end"] < info["stationarity_start"]      # stationarity improved
    assert context.info["teacher"]["trained_on"] == "whole training split"
    folder = context.artifacts_dir
    for name in ("history.csv", "lambda_vs_accuracy.csv", "summary.json", "dsv_grid.png"):
        assert (folder / name).stat().st_size > 0


def test_few_shot_starts_from_the_shots_subset(small_data, context):
    real = real_subset(small_data, 1, seed=0)
    method = create_method("deepkkt", **{**TINY_OPTIONS, "iterations": 0, "repair_steps": 0,
                                         "candidates_per_class": 1})
    syn = method.distill(real, ipc=1, seed=0, context=context)
    assert context.info["deepkkt"]["init"] == "real"
    for c in range(10):  # unchanged real image of class c (no step taken)
        assert torch.equal(syn.syn_images[syn.syn_labels == c], real.of_class(c))


def test_resume_matches_an_uninterrupted_run(small_data, context, tmp_path):
    real = real_subset(small_data, 0, seed=0)
    options = {**TINY_OPTIONS, "iterations": 6, "checkpoint_every": 3, "repair_steps": 0}
    whole = create_method("deepkkt", **options).distill(real, 1, 0, context)
    # a run interrupted after its checkpoint at iteration 3, resumed in a new process
    interrupted = dataclasses.replace(context, workdir=tmp_path / "other", info={})
    create_method("deepkkt", **{**options, "iterations": 3}).distill(real, 1, 0, interrupted)
    state = torch.load(interrupted.workdir / "deepkkt.pt", weights_only=False)
    assert state["iteration"] == 3
    resumed = create_method("deepkkt", **options).distill(real, 1, 0, interrupted)
    assert torch.allclose(resumed.syn_images, whole.syn_images, atol=1e-5)


def test_selection_keeps_real_images_with_top_lambda(small_data, context):
    real = real_subset(small_data, 5, seed=0)
    method = create_method("deepkkt-select", teacher_backbone=TINY, teacher_epochs=3,
                           iterations=40)
    syn = method.distill(real, ipc=2, seed=0, context=context)
    assert syn.syn_images.shape[0] == 20
    indices = syn.provenance["train_indices"]
    assert set(indices) <= set(real.indices.tolist())
    assert (syn.extras["lambdas"] >= 0).all()
    info = context.info["deepkkt"]
    assert info["stationarity_end"] < info["stationarity_start"]


def test_selection_needs_enough_shots(small_data, context):
    real = real_subset(small_data, 1, seed=0)
    with pytest.raises(ValueError, match="shots >= 2"):
        create_method("deepkkt-select", teacher_backbone=TINY).distill(real, 2, 0, context)


def test_stationarity_gradient_is_the_lambda_weighted_sum():
    torch.manual_seed(0)
    net = ConvNet(3, 1, 28, width=4)
    params = list(net.parameters())
    x, y, lam = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 0]), torch.rand(4)
    g = losses.weighted_loss_gradient(net, params, net(x), y, lam)
    expected = sum(lam[i] * torch.cat([p.reshape(-1) for p in torch.autograd.grad(
        torch.nn.functional.cross_entropy(net(x[i:i + 1]), y[i:i + 1]), params)])
        for i in range(4))
    assert torch.allclose(g, expected, atol=1e-5)


def test_primal_loss_ignores_correct_candidates():
    logits = torch.tensor([[5.0, 0.0], [5.0, 0.0]])
    loss = losses.primal_loss(logits, torch.tensor([0, 1]))
    expected = torch.nn.functional.cross_entropy(logits[1:], torch.tensor([1])) / 2
    assert torch.isclose(loss, expected)


def test_augmentation_is_differentiable_and_private():
    x = torch.rand(3, 3, 32, 32, requires_grad=True)
    state = torch.get_rng_state()
    out = kkt_augment(x, torch.Generator().manual_seed(0), DeepKKTConfig())
    assert torch.equal(state, torch.get_rng_state())
    out.sum().backward()
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("bad", [{"distance": "l3"}, {"lambda_policy": "drop"},
                                 {"init": "imagenet"}, {"iterations": -1}])
def test_bad_config_is_named(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        DeepKKTConfig(**bad)
