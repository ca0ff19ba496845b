"""The evaluator's fast paths give the results of the plain ones (issue 7).

``Pool2x2`` must be bit-identical to ``F.avg_pool2d(x, 2)`` (it is always on, on CPU);
stacked training (``batched_runs``) must match one-network-at-a-time training up to
floating-point summation order. Speed itself is measured by ``benchmarks/evaluator.py``,
not here.
"""
from __future__ import annotations

import copy
import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distill_bench.augment import DSA
from distill_bench.evaluator import evaluate, get_protocol
from distill_bench.networks import create_backbone
from distill_bench.synthetic import Preprocessing, SyntheticSet
from distill_bench.training import (FastAvgPool2d, Pool2x2, StackedModels, train_epoch,
                                    train_epoch_stacked, use_fast_pooling)

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "evaluator.py"


def _syn(data) -> SyntheticSet:
    prep = Preprocessing(data.mean, data.std)
    return SyntheticSet(prep(data.train_images), data.train_labels.clone(), data.num_classes,
                        data.name, prep)


def _small_convnet(seed: int, norm: str = "instancenorm") -> nn.Module:
    torch.manual_seed(seed)
    return create_backbone("convnet", 3, 3, 16, width=8, depth=2, norm=norm)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (2, 4, 7, 9), (3, 16, 32, 32)])
def test_pool2x2_is_bit_identical_to_avg_pool2d(dtype, shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    x.requires_grad_()
    stock, fast = F.avg_pool2d(x, 2), Pool2x2.apply(x)
    grad = torch.randn_like(stock)
    (stock_grad,) = torch.autograd.grad(stock, x, grad)
    (fast_grad,) = torch.autograd.grad(fast, x, grad)
    assert fast.dtype == stock.dtype and fast.shape == stock.shape
    assert torch.equal(fast, stock)
    assert torch.equal(fast_grad, stock_grad)


def test_pool2x2_gradients_and_vmap():
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(Pool2x2.apply, (x,))
    assert torch.autograd.gradgradcheck(Pool2x2.apply, (x,))
    batched = torch.randn(3, 2, 4, 8, 8)
    assert torch.equal(torch.func.vmap(Pool2x2.apply)(batched),
                       torch.stack([F.avg_pool2d(b, 2) for b in batched]))


def test_use_fast_pooling_swaps_only_plain_2x2_average_pooling():
    model = nn.Sequential(nn.AvgPool2d(2), nn.AvgPool2d(3), nn.MaxPool2d(2),
                          nn.AvgPool2d(2, stride=1), nn.AvgPool2d(2, padding=1),
                          nn.Sequential(nn.AvgPool2d((2, 2), (2, 2))))
    assert use_fast_pooling(model) == 2
    kinds = [type(m).__name__ for m in model]
    assert kinds == ["FastAvgPool2d", "AvgPool2d", "MaxPool2d", "AvgPool2d", "AvgPool2d",
                     "Sequential"]
    assert isinstance(model[5][0], FastAvgPool2d)
    assert use_fast_pooling(create_backbone("convnet", 10, 3, 32)) == 3


def test_training_with_fast_pooling_is_bit_identical():
    """The evaluator's default fp32 path must not change: same losses, same weights."""
    images = torch.randn(12, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(3).repeat(4)
    trained = []
    for fast in (False, True):
        model = _small_convnet(0)
        if fast:
            assert use_fast_pooling(model) == 2
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        gen = torch.Generator().manual_seed(2)
        dsa = DSA()
        losses = [train_epoch(model, images, labels, opt, 5, gen, lambda x, g: dsa(x, g))
                  for _ in range(3)]
        trained.append((losses, [p.detach().clone() for p in model.parameters()]))
    (slow_losses, slow_params), (fast_losses, fast_params) = trained
    assert fast_losses == slow_losses
    assert all(torch.equal(a, b) for a, b in zip(slow_params, fast_params))


def test_stacked_models_forward_and_unstack():
    models = [_small_convnet(seed) for seed in range(3)]
    originals = copy.deepcopy(models)
    stacked = StackedModels(models)
    x = torch.randn(3, 4, 3, 16, 16)
    out = stacked(x)
    assert out.shape == (3, 4, 3)
    for k, model in enumerate(originals):
        assert torch.allclose(out[k], model(x[k]), atol=1e-5)
    with torch.no_grad():
        for tensor in stacked.parameters():
            tensor.add_(1.0)
    stacked.unstack()
    for model, original in zip(models, originals):
        for p, q in zip(model.parameters(), original.parameters()):
            assert torch.equal(p, q + 1.0)
    with pytest.raises(ValueError, match="at least one network"):
        StackedModels([])


@pytest.mark.parametrize("norm", ["instancenorm", "batchnorm"])
def test_stacked_epochs_match_one_network_at_a_time(norm):
    """Same batches, augmentations and initial weights: the same training, up to rounding;
    BatchNorm running statistics follow each network's own batches."""
    images = torch.randn(10, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    labels = torch.arange(3).repeat(4)[:10]
    dsa = DSA()
    augment = lambda x, g: dsa(x, g)  # noqa: E731

    def optimizer(params):
        return torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)

    alone = []
    for seed in range(3):
        model = _small_convnet(seed, norm)
        opt, gen = optimizer(model.parameters()), torch.Generator().manual_seed(seed)
        losses = [train_epoch(model, images, labels, opt, 4, gen, augment)
                  for _ in range(3)]
        alone.append((losses, model))

    stacked = StackedModels([_small_convnet(seed, norm) for seed in range(3)])
    opt = optimizer(stacked.parameters())
    gens = [torch.Generator().manual_seed(seed) for seed in range(3)]
    together = [train_epoch_stacked(stacked, images, labels, opt, 4, gens, augment)
                for _ in range(3)]
    models = stacked.unstack()
    for k, (losses, model) in enumerate(alone):
        assert [epoch[k] for epoch in together] == pytest.approx(losses, rel=1e-4)
        for (name, a), b in zip(model.state_dict().items(), models[k].state_dict().values()):
            assert torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5), name
    with pytest.raises(ValueError, match="2 generators for 3 stacked networks"):
        train_epoch_stacked(stacked, images, labels, opt, 4, gens[:2])


def test_stacked_epochs_take_soft_labels():
    images = torch.randn(6, 3, 16, 16)
    soft = torch.softmax(torch.randn(6, 3), dim=1)
    model = _small_convnet(0)
    stacked = StackedModels([copy.deepcopy(model), copy.deepcopy(model)])
    opt = torch.optim.SGD(stacked.parameters(), lr=0.01)
    gens = [torch.Generator().manual_seed(0) for _ in range(2)]
    first, second = train_epoch_stacked(stacked, images, soft, opt, 4, gens)
    assert first == pytest.approx(second, rel=1e-5)  # same start, same draws


def test_batched_runs_give_the_sequential_accuracies(toy):
    protocol = get_protocol("dc", epochs=12, num_eval_runs=3, augment="dsa", batch_size=8)
    seen = []
    one_by_one = evaluate(_syn(toy), toy, protocol, backbone="convnet", seed=5,
                          progress=False)
    together = evaluate(_syn(toy), toy, protocol, backbone="convnet", seed=5,
                        progress=False, batched_runs=True, on_run=seen.append)
    assert [r.run for r in together] == [0, 1, 2] and seen == together
    for a, b in zip(one_by_one, together):
        assert b.test_acc == pytest.approx(a.test_acc, abs=1e-6)
        assert b.test_acc_per_class == pytest.approx(a.test_acc_per_class, abs=1e-6)
        assert b.train_loss == pytest.approx(a.train_loss, rel=1e-3)
    assert len({r.seconds for r in together}) == 1, "stacked runs share their time"
    resumed = evaluate(_syn(toy), toy, protocol, backbone="convnet", seed=5, runs=[2],
                       progress=False, batched_runs=True)
    assert [r.run for r in resumed] == [2]
    assert resumed[0].train_loss == one_by_one[2].train_loss  # one run: the plain path


def _load_benchmark(filename: str):
    """A script of benchmarks/ as a module (they are not a package)."""
    name = "benchmark_" + Path(filename).stem
    if name not in sys.modules:  # dataclasses look their module up while being built
        spec = importlib.util.spec_from_file_location(name, BENCHMARK.with_name(filename))
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def _benchmark_module():
    return _load_benchmark("evaluator.py")


def test_benchmark_flop_count_and_variants():
    bench = _benchmark_module()
    model = create_backbone("convnet", 10, 3, 32)
    # ConvNet-3 on 32x32: multiply-adds per layer, from the layer shapes
    macs = [128 * 32 * 32 * 3 * 9, 128 * 16 * 16 * 128 * 9, 128 * 8 * 8 * 128 * 9,
            2048 * 10]
    expected = 3 * 2 * sum(macs) - 2 * macs[0]
    assert bench.training_flops(model, (3, 32, 32)) == pytest.approx(expected)
    assert bench.Variant.parse("bf16+batched") == bench.Variant("bf16+batched", "bf16", True)
    assert bench.Variant.parse("fp32+compile").options == {
        "precision": "fp32", "batched_runs": False, "compile_model": True}
    for wrong in ("fp16", "bf16+fast"):
        with pytest.raises(ValueError, match=re.escape(f"variant '{wrong}' is not known")):
            bench.Variant.parse(wrong)
    with pytest.raises(ValueError, match="do not combine"):
        bench.Variant.parse("bf16+batched+compile")
    assert bench.default_epochs(1) == 500 and bench.default_epochs(50) == 20


def test_benchmark_reference_loop_learns(toy):
    bench = _benchmark_module()
    syn = _syn(toy)
    _, first = bench.reference_train(syn.syn_images, syn.syn_labels, 1, 0, "cpu")
    net, last = bench.reference_train(syn.syn_images, syn.syn_labels, 20, 0, "cpu")
    assert last < first, "20 epochs should lower the training loss of the first"
    test_x = syn.preprocessing(toy.test_images)
    acc = bench.reference_test(net, test_x, toy.test_labels)
    assert 0 <= acc <= 100


@pytest.mark.slow  # compiles (seconds with a warm inductor cache, a minute without)
def test_compiled_training_matches_eager(toy):
    torch._dynamo.reset()
    protocol = get_protocol("dc", epochs=6, num_eval_runs=2, augment="dsa", batch_size=8)
    eager = evaluate(_syn(toy), toy, protocol, backbone="convnet", seed=2, progress=False)
    compiled = evaluate(_syn(toy), toy, protocol, backbone="convnet", seed=2,
                        progress=False, compile_model=True)
    for a, b in zip(eager, compiled):
        assert b.train_loss == pytest.approx(a.train_loss, rel=1e-4)
        assert b.test_acc == pytest.approx(a.test_acc, abs=1e-6)
    with pytest.raises(ValueError, match="batched_runs=True with compile_model=True"):
        evaluate(_syn(toy), toy, protocol, progress=False, batched_runs=True,
                 compile_model=True)


def test_benchmark_ratios_and_report():
    bench = _benchmark_module()
    rows = [bench.SpeedRow(1, "reference", "fp32", 10, 2, 4.0, 4.0),
            bench.SpeedRow(1, "bf16", "bf16", 10, 2, 2.0, 1.0),
            bench.SpeedRow(10, "reference", "fp32", 2, 2, 8.0, 8.0),
            bench.SpeedRow(10, "bf16", "bf16", 2, 2, 5.0, 4.0),
            bench.SpeedRow(10, "fp32+compile", "fp32", 2, 2, 4.0, 4.0)]
    bench.finish_rows(rows, flops=1e9, peaks={"fp32": 100.0, "bf16": 200.0})
    assert rows[1].image_epochs_per_s == pytest.approx(100.0)   # 10 * 10 * 2 / 2 s
    assert (rows[1].ratio_wall, rows[1].ratio_cpu) == (pytest.approx(2.0), pytest.approx(4.0))
    assert rows[1].peak_fraction == pytest.approx(0.5)          # 100 GFLOP/s of 200
    assert bench.fastest(rows) == "fp32+compile"                 # ratio 2.0 at ipc 10
    assert bench.fastest(rows[:2]) == "bf16"                     # no ipc 10: the first ipc
    acc = [bench.AccuracyRow("reference", "fp32", [50.0, 52.0]),
           bench.AccuracyRow("bf16", "bf16", [51.0, 51.5])]
    text = "\n".join(bench.speed_table(rows) + bench.accuracy_table(acc))
    assert "| 1 | bf16 | 10 | 2 | 100.0 | 2.00 | 4.00 | 100.0 | 50% |" in text
    assert "within one standard deviation" in text and "NOT" not in text


def test_methods_benchmark_times_iterations(toy, monkeypatch):
    """Per-iteration time is the difference of two runs over the extra iterations; the
    set-up is what remains of the short run. Timings are faked: tests never time."""
    bench = _load_benchmark("method_speed.py")
    real_run = bench.distill_seconds(  # the real path runs end to end on toy data
        "dm", {"iterations": 1, "checkpoint_every": 0}, bench.real_subset(toy, 2, seed=0),
        1, toy, "cpu")
    assert real_run > 0
    calls = []

    def fake(name, options, real, ipc, data, device, profile=False):
        calls.append(options["iterations"])
        return 5.0 + 0.5 * options["iterations"]  # 5 s of set-up, 0.5 s per iteration
    monkeypatch.setattr(bench, "distill_seconds", fake)
    args = bench.parse_args(["--methods", "dm", "--ipc", "1", "--shots", "2", "--extra", "4"])
    timing = bench.time_method("dm", 1, 2, toy, args)
    assert calls == [1, 1, 5]  # warm-up, short, short + extra
    assert timing.per_iteration == pytest.approx(0.5) and timing.setup == pytest.approx(5.0)
    assert timing.budget_iterations == 20000
    assert timing.budget_hours == pytest.approx(20000 * 0.5 / 3600)
    text = bench.report([timing], {"command": "method_speed.py", "dataset": toy.name})
    assert "| dm | 1 | 2 | 0.500 | 5.0 | 20000 | 2.78 |" in text
    assert bench.default_iterations("mtt", 1) == 500  # the cpu preset's
    assert bench.default_iterations("dm", 10) == 20000
    assert bench.default_iterations("dc", 1) == 1000
    with pytest.raises(SystemExit):
        bench.parse_args(["--ipc", "10", "--shots", "5"])
