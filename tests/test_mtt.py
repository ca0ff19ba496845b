"""MTT end to end at a tiny size on CPU: experts, matching, resume, guards, config checks."""
from pathlib import Path

import pytest
import torch

import baselines.mtt as mtt_module
from baselines.experts import ExpertRecipe, train_expert
from baselines.mtt import MTT, MTTConfig, init_images, table_ipc
from distill_bench.budget import real_subset
from distill_bench.data.datasets import CACHE_ENV
from distill_bench.method import RunContext
from distill_bench.zca import whiten

# 2 experts x 3 epochs, a few iterations of 3 student steps, a narrow ConvNet
TINY = dict(num_experts=2, train_epochs=3, iterations=4, syn_steps=3, width=16,
            checkpoint_every=1)


@pytest.fixture
def real(mnist, tmp_path, monkeypatch):
    """MNIST, 5 shots per class; experts cached in this test's folder."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return real_subset(mnist, 5, seed=0)


def _context(path: Path) -> RunContext:
    return RunContext(torch.device("cpu"), path, progress=False, log_every=1)


def test_end_to_end(real, tmp_path):
    method = MTT(**TINY)
    syn = method.distill(real, 1, 0, _context(tmp_path / "work"))

    # the set: one learned, positive step size; images moved away from their init, finite
    assert syn.eval_lr > 0 and syn.eval_lr != MTTConfig.syn_lr_init
    assert syn.syn_images.shape == (10, 1, 28, 28)
    assert torch.isfinite(syn.syn_images).all()
    start, _ = init_images(whiten(real), 1, "real", torch.Generator().manual_seed(0))
    assert (syn.syn_images - start).abs().max() > 1e-3
    # the table turns ZCA on at ipc 1, but 50 real images cannot fit a 784-value whitening
    assert syn.preprocessing.zca is None and not method.budget()["paper_budget"]

    # experts: 2 files of 3 + 1 snapshots each
    experts = sorted((tmp_path / "cache" / "experts").glob("*/expert_*.pt"))
    assert len(experts) == 2
    snaps = torch.load(experts[0], weights_only=False)["snapshots"]
    assert snaps.shape[0] == 4 and snaps.dtype == torch.float32

    budget = method.budget()
    assert budget["num_experts"] == 2 and budget["iterations"] == 4
    assert budget["syn_steps"] == 3 and budget["paper_budget"] is False


def test_zca_from_a_full_rank_subset_only_unless_forced(real, tmp_path):
    cfg = MTTConfig(**TINY)
    assert cfg.resolve(1, num_real=50, pixels=784).zca is False   # rank 50 < 784
    assert cfg.resolve(1, num_real=1000, pixels=784).zca is True  # the table's choice
    assert MTTConfig(**TINY, zca_full_rank=False).resolve(1, 50, 784).zca is True
    forced = MTT(**TINY, zca=True).distill(real, 1, 0, _context(tmp_path / "forced"))
    # forced on: the evaluator will whiten test images with the same transform
    assert forced.preprocessing.zca["transform"].shape == (784, 784)


def test_resume_equals_uninterrupted(real, tmp_path, monkeypatch):
    whole = MTT(**TINY).distill(real, 1, 0, _context(tmp_path / "a"))

    # interrupt the third iteration, then run again in the same workdir
    original = mtt_module.trajectory_loss
    calls = {"n": 0}

    def crash_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated interruption")
        return original(*args, **kwargs)

    monkeypatch.setattr(mtt_module, "trajectory_loss", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        MTT(**TINY).distill(real, 1, 0, _context(tmp_path / "b"))
    monkeypatch.setattr(mtt_module, "trajectory_loss", original)
    saved = torch.load(tmp_path / "b" / "mtt.pt", weights_only=False)
    assert saved["iteration"] == 2
    resumed = MTT(**TINY).distill(real, 1, 0, _context(tmp_path / "b"))

    assert torch.equal(resumed.syn_images, whole.syn_images)
    assert resumed.eval_lr == whole.eval_lr


def test_a_longer_run_continues_a_finished_shorter_one(real, tmp_path):
    whole = MTT(**TINY).distill(real, 1, 0, _context(tmp_path / "whole"))
    MTT(**{**TINY, "iterations": 2}).distill(real, 1, 0, _context(tmp_path / "grow"))
    grown = MTT(**TINY).distill(real, 1, 0, _context(tmp_path / "grow"))
    assert torch.equal(grown.syn_images, whole.syn_images)
    assert grown.eval_lr == whole.eval_lr
    # a state past the asked budget is not used: a shorter run starts afresh
    short = MTT(**{**TINY, "iterations": 2}).distill(real, 1, 0, _context(tmp_path / "grow"))
    fresh = MTT(**{**TINY, "iterations": 2}).distill(real, 1, 0, _context(tmp_path / "new"))
    assert torch.equal(short.syn_images, fresh.syn_images)


def test_expert_resume_and_fp16(real, tmp_path):
    recipe = ExpertRecipe(width=8, storage="fp16")
    path_a, path_b = tmp_path / "a.pt", tmp_path / "b.pt"
    train_expert(real, recipe, 7, 3, path_a)
    train_expert(real, recipe, 7, 2, path_b)          # interrupted after epoch 2
    train_expert(real, recipe, 7, 3, path_b)          # resumed to epoch 3
    a = torch.load(path_a, weights_only=False)
    b = torch.load(path_b, weights_only=False)
    assert a["snapshots"].dtype == torch.float16 and a["snapshots"].shape[0] == 4
    assert torch.equal(a["snapshots"], b["snapshots"])


def test_non_finite_loss_stops_and_keeps_checkpoint(real, tmp_path, monkeypatch):
    original = mtt_module.trajectory_loss
    calls = {"n": 0}

    def nan_on_third(*args, **kwargs):
        calls["n"] += 1
        loss = original(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(mtt_module, "trajectory_loss", nan_on_third)
    work = tmp_path / "work"
    with pytest.raises(FloatingPointError, match=r"iteration 3/4.*syn_lr.*iteration 2\)"):
        MTT(**TINY).distill(real, 1, 0, _context(work))
    saved = torch.load(work / "mtt.pt", weights_only=False)
    assert saved["iteration"] == 2 and torch.isfinite(saved["syn_images"]).all()


def test_step_size_stays_positive(real, tmp_path):
    # a step-size lr far too large drives alpha below zero; the floor holds it
    method = MTT(**{**TINY, "iterations": 2, "lr_lr": 10.0, "min_syn_lr": 1e-4})
    syn = method.distill(real, 1, 0, _context(tmp_path / "work"))
    assert syn.eval_lr == pytest.approx(1e-4)


def test_bad_configs_raise_before_any_work(real, tmp_path):
    with pytest.raises(ValueError, match=r"train_epochs=2 is too short.*>= 3"):
        MTT(train_epochs=2, max_start_epoch=2, expert_epochs=2)
    with pytest.raises(ValueError, match=r"train_epochs >= 21"):
        MTT(train_epochs=5).config.resolve(10)          # ipc 10: max_start_epoch 20
    with pytest.raises(ValueError, match="preset='fast'"):
        MTT(preset="fast")
    with pytest.raises(ValueError, match="lr_img=-1"):
        MTT(lr_img=-1.0)
    with pytest.raises(ValueError, match="unknown option"):
        MTT(num_expert=3)

    context = _context(tmp_path / "work")
    cases = [(dict(batch_syn=11), 1, "batch_syn=11 exceeds the 10"),
             (dict(max_start_epoch=2), 6, "ipc=6 real images per class"),
             (dict(backbone="convnet_bn"), 1, "buffers")]
    for overrides, ipc, message in cases:
        with pytest.raises(ValueError, match=message):
            MTT(**{**TINY, **overrides}).distill(real, ipc, 0, context)
    assert not (tmp_path / "cache" / "experts").exists()    # nothing was trained


def test_defaults_by_ipc_and_presets():
    assert [table_ipc(i) for i in (1, 3, 4, 22, 23, 100)] == [1, 1, 10, 10, 50, 50]
    cpu = MTTConfig().resolve(10)
    assert (cpu.syn_steps, cpu.max_start_epoch, cpu.lr_img, cpu.zca) == (30, 20, 100.0, True)
    assert (cpu.num_experts, cpu.train_epochs, cpu.iterations) == (5, 22, 500)
    assert not cpu.is_paper_budget(10)
    # small subsets keep 10 expert steps per epoch; the whole training set gets 256
    assert MTTConfig().resolve(1, num_real=100).expert_batch == 10
    assert MTTConfig().resolve(1, num_real=50_000).expert_batch == 256
    paper = MTTConfig.paper().resolve(50)
    assert (paper.num_experts, paper.train_epochs, paper.iterations) == (100, 50, 5000)
    assert paper.zca is False and paper.is_paper_budget(50)
