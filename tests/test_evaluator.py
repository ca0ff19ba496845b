"""The evaluator: protocols, and training fresh networks on a synthetic set.

Uses a tiny in-memory dataset (classes differ in brightness) so each evaluation takes well
under a second; real-data evaluations are in ``test_runner.py``.
"""
from __future__ import annotations

import pytest
import torch

from distill_bench import evaluator
from distill_bench.evaluator import EvalRun, evaluate, get_protocol, list_protocols
from distill_bench.registry import UnknownNameError
from distill_bench.synthetic import Preprocessing, SyntheticSet

FAST = dict(epochs=30, num_eval_runs=2, augment="none", batch_size=8)


def _syn(data, **kwargs) -> SyntheticSet:
    """The toy dataset's own training images as a synthetic set."""
    prep = Preprocessing(data.mean, data.std)
    return SyntheticSet(prep(data.train_images), data.train_labels.clone(), data.num_classes,
                        data.name, prep, **kwargs)


def _protocol(**changes):
    return get_protocol("dc", **{**FAST, **changes})


def test_protocol_presets_match_the_issue():
    assert {"standard", "dc", "quick"} <= set(list_protocols())
    std = get_protocol("standard")
    assert (std.epochs, std.augment, std.optimizer, std.lr, std.momentum, std.weight_decay,
            std.lr_decay_at, std.batch_size, std.num_eval_runs) == \
        (1000, "dsa", "sgd", 0.01, 0.9, 5e-4, 0.5, 256, 5)
    assert std.comparable
    dc = get_protocol("dc")
    assert (dc.epochs, dc.augment, dc.lr, dc.num_eval_runs) == (300, "none", 0.01, 5)
    assert not get_protocol("quick").comparable
    assert get_protocol("quick").to_dict()["name"] == "quick"


def test_get_protocol_overrides():
    p = get_protocol("standard", epochs=3, num_eval_runs=None)
    assert p.epochs == 3 and p.num_eval_runs == 5 and p.name == "standard"
    assert get_protocol("standard").epochs == 1000  # the preset itself is untouched
    with pytest.raises(UnknownNameError, match="Did you mean 'quick'"):
        get_protocol("quik")
    with pytest.raises(TypeError):
        get_protocol("standard", epoch=3)


def test_training_learns_and_reports_each_run(toy):
    seen = []
    runs = evaluate(_syn(toy), toy, _protocol(), backbone="mlp", progress=False,
                    on_run=seen.append)
    assert [r.run for r in runs] == [0, 1] and seen == runs
    for r in runs:
        assert isinstance(r, EvalRun) and 0 <= r.test_acc <= 100
        assert r.test_acc > 100 / toy.num_classes + 20, "the toy classes are easy to learn"
        assert len(r.test_acc_per_class) == toy.num_classes
        # a balanced test set: overall accuracy is the mean of the per-class ones
        assert r.test_acc == pytest.approx(sum(r.test_acc_per_class) / toy.num_classes)
        assert r.seconds >= 0 and r.train_loss == r.train_loss


def test_runs_are_deterministic_and_resumable(toy):
    full = evaluate(_syn(toy), toy, _protocol(augment="dsa"), backbone="convnet", seed=3,
                    progress=False)
    redo = evaluate(_syn(toy), toy, _protocol(augment="dsa"), backbone="convnet", seed=3,
                    runs=[1], progress=False)
    assert [r.run for r in redo] == [1]
    assert redo[0].test_acc == full[1].test_acc and redo[0].train_loss == full[1].train_loss
    other = evaluate(_syn(toy), toy, _protocol(augment="dsa"), backbone="convnet", seed=4,
                     runs=[1], progress=False)
    assert other[0].train_loss != full[1].train_loss, "the seed should change the run"


def _spy_optimizer(monkeypatch) -> list:
    made = []
    real = evaluator._optimizer

    def spy(protocol, params, lr):
        opt = real(protocol, params, lr)
        made.append((lr, opt))
        return opt
    monkeypatch.setattr(evaluator, "_optimizer", spy)
    return made


def test_learned_lr_is_applied_and_decayed_once(toy, monkeypatch):
    made = _spy_optimizer(monkeypatch)
    evaluate(_syn(toy, eval_lr=0.003), toy, _protocol(num_eval_runs=1), backbone="mlp",
             progress=False)
    lr, opt = made[-1]
    assert lr == 0.003
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0003)  # x0.1 once, at half
    evaluate(_syn(toy, eval_lr=0.003), toy, _protocol(num_eval_runs=1, use_learned_lr=False),
             backbone="mlp", progress=False)
    assert made[-1][0] == 0.01
    evaluate(_syn(toy), toy, _protocol(num_eval_runs=1, lr=0.02), backbone="mlp",
             progress=False)
    assert made[-1][0] == 0.02


def test_test_images_go_through_the_sets_preprocessing(toy):
    calls = []

    class Recording(Preprocessing):
        def __call__(self, images):
            calls.append(images)
            return super().__call__(images)

    dim = toy.channels * toy.image_size ** 2
    zca = {"mean": torch.zeros(dim), "transform": 2 * torch.eye(dim)}
    syn = _syn(toy)
    syn.preprocessing = Recording(toy.mean, toy.std, zca)
    evaluate(syn, toy, _protocol(num_eval_runs=1, epochs=1), backbone="mlp", progress=False)
    assert len(calls) == 1 and torch.equal(calls[0], toy.test_images)


@pytest.mark.parametrize("protocol_augment, set_augment, expected", [
    ("dsa", None, True), ("dsa", "none", False), ("none", None, False)])
def test_augmentation_follows_protocol_and_set(toy, monkeypatch, protocol_augment,
                                               set_augment, expected):
    calls = []

    class CountingDSA(evaluator.DSA):
        def __call__(self, x, generator, siamese=False):
            calls.append((x.shape[0], siamese))
            return super().__call__(x, generator, siamese)
    monkeypatch.setattr(evaluator, "DSA", CountingDSA)
    evaluate(_syn(toy, eval_augment=set_augment), toy,
             _protocol(num_eval_runs=1, epochs=2, augment=protocol_augment),
             backbone="mlp", progress=False)
    assert bool(calls) == expected
    assert all(not siamese for _, siamese in calls)  # evaluation draws per image


def test_soft_labels_train(toy):
    soft = torch.nn.functional.one_hot(toy.train_labels, toy.num_classes).float() * 0.9 + 0.1 / 3
    runs = evaluate(_syn(toy), toy, _protocol(num_eval_runs=1), backbone="mlp",
                    progress=False)
    soft_runs = evaluate(SyntheticSet(_syn(toy).syn_images, soft, 3, toy.name,
                                      Preprocessing(toy.mean, toy.std)),
                         toy, _protocol(num_eval_runs=1), backbone="mlp", progress=False)
    assert soft_runs[0].test_acc > 100 / 3 + 20
    assert soft_runs[0].train_loss != runs[0].train_loss


def test_errors(toy):
    with pytest.raises(ValueError, match="for dataset 'toy', not 'other'"):
        other = type(toy)(**{**toy.__dict__, "name": "other"})
        evaluate(_syn(toy), other, _protocol(), progress=False)
    with pytest.raises(ValueError, match="augment='flips'"):
        evaluate(_syn(toy), toy, _protocol(augment="flips"), backbone="mlp", progress=False)
    with pytest.raises(ValueError, match="optimizer='lbfgs'"):
        evaluate(_syn(toy), toy, _protocol(optimizer="lbfgs"), backbone="mlp",
                 progress=False)
    with pytest.raises(FloatingPointError, match="diverged"):
        evaluate(_syn(toy, eval_lr=1e12), toy, _protocol(num_eval_runs=1, epochs=5),
                 backbone="mlp", progress=False)
