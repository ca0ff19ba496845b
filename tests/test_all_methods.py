"""Every registered method, the same way: a seconds-long CPU distillation at ipc 1.

For each name in ``list_methods()`` (built-in, baselines and installed plugins alike): the
method distils a tiny MNIST (4 real images per class, shots 2) with the small settings of
``TINY`` (unknown methods run with their defaults), returns a valid ``SyntheticSet`` that
the evaluator can train on, sends gradients to the images when it optimises images, and
rejects bad arguments. Teachers and experts are trained on the tiny data, in a temporary
cache, never in the shared one.
"""
from __future__ import annotations

import dataclasses
import time

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from distill_bench import create_method, get_method, list_methods, load_dataset, real_subset
from distill_bench.evaluator import evaluate, get_protocol
from distill_bench.method import METHODS, RunContext
from distill_bench.runner import Cell
from distill_bench.synthetic import SyntheticSet
from tiny_data import tiny_env

IPC = 1
SHOTS = 2                       # real images per class a method may see
SECONDS = 120                   # a method slower than this at these sizes is a bug here
# small settings per method; keys a method's Config lacks are dropped (with a note)
TINY = {
    "dc": {"iterations": 2, "batch_real": 4, "width": 16, "batch_train": 16,
           "checkpoint_every": 0},
    "dsa": {"iterations": 2, "batch_real": 4, "width": 16, "batch_train": 16,
            "checkpoint_every": 0},
    "dm": {"iterations": 2, "batch_real": 4, "width": 16, "checkpoint_every": 0},
    "mtt": {"iterations": 2, "num_experts": 1, "train_epochs": 2, "syn_steps": 2,
            "expert_epochs": 1, "max_start_epoch": 1, "width": 16, "expert_batch": 8,
            "zca": False, "checkpoint_every": 0},
    "deepkkt": {"iterations": 2, "teacher_epochs": 1, "repair_steps": 1,
                "checkpoint_every": 0, "log_every": 1},
    "deepkkt-select": {"iterations": 2, "teacher_epochs": 1, "chunk": 8},
}


def broken_entry_points() -> dict[str, tuple[str, str]]:
    list_methods()  # loads the entry points
    return dict(getattr(METHODS, "_broken", {}))


def method_params():
    params = [pytest.param(name, id=name) for name in list_methods()]
    for name, (where, why) in sorted(broken_entry_points().items()):
        if name not in list_methods():
            params.append(pytest.param(name, id=name, marks=pytest.mark.skip(
                reason=f"method {name!r} cannot be run: entry point {where} failed ({why})")))
    return params


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """The tiny MNIST, with caches, teachers and experts in a temporary folder."""
    root = tmp_path_factory.mktemp("all_methods")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in tiny_env(root, train_per_class=4, test_per_class=3).items():
            patch.setenv(key, value)
        yield load_dataset("mnist")


def tiny_options(name: str) -> dict:
    fields = {f.name for f in dataclasses.fields(get_method(name).Config)}
    wanted = TINY.get(name, {})
    dropped = sorted(set(wanted) - fields)
    if dropped:  # a renamed field must not stop the shared test; it only costs time
        print(f"{name}: Config has no {dropped}; running with its defaults for those")
    return {k: v for k, v in wanted.items() if k in fields}


class ImageGradients:
    """Records, at every optimiser step, whether a parameter shaped like images
    (N, C, H, W) held a finite, non-zero gradient."""

    def __init__(self, image_shape: tuple[int, ...]):
        self.image_shape = tuple(image_shape)
        self.steps_with_grad = 0
        self.bad_grads = 0

    def __call__(self, optimizer, args, kwargs):
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.dim() != 4 or tuple(p.shape[1:]) != self.image_shape or p.grad is None:
                    continue
                if not torch.isfinite(p.grad).all():
                    self.bad_grads += 1
                elif p.grad.abs().sum() > 0:
                    self.steps_with_grad += 1


def is_real_selection(syn: SyntheticSet, real) -> bool:
    """Whether every synthetic image is one of the real images (a coreset method)."""
    flat_real = real.images.flatten(1)
    return all((flat_real == x.flatten()).all(1).any() for x in syn.syn_images)


@pytest.mark.parametrize("name", method_params())
def test_method_distils_a_tiny_set(name, tiny_data, tmp_path):
    data = tiny_data
    real = real_subset(data, SHOTS, seed=0)
    method = create_method(name, **tiny_options(name))
    context = RunContext(torch.device("cpu"), tmp_path / "work",
                         teacher_data=lambda: data, artifacts_dir=tmp_path / "artifacts",
                         progress=False)
    context.workdir.mkdir()
    grads = ImageGradients(real.images.shape[1:])
    handle = register_optimizer_step_pre_hook(grads)
    started = time.time()
    try:
        torch.manual_seed(0)
        syn = method.distill(real, IPC, 0, context)
    finally:
        handle.remove()
    assert time.time() - started < SECONDS

    # a valid set: ipc images of every class, the real images' shape, finite pixels
    assert isinstance(syn, SyntheticSet) and syn.dataset == "mnist"
    assert syn.syn_images.shape == (data.num_classes * IPC, 1, 28, 28)
    counts = torch.bincount(syn.hard_labels, minlength=data.num_classes)
    assert counts.tolist() == [IPC] * data.num_classes
    assert torch.isfinite(syn.syn_images).all()
    assert syn.provenance["method"] == name and "config" in syn.provenance
    if get_method(name).needs_teacher:
        assert "teacher" in context.info, f"{name} needs a teacher but did not record it"

    # gradients reach the images, unless the method selects real images
    assert grads.bad_grads == 0, f"{name}: non-finite gradients on the images"
    if not is_real_selection(syn, real):
        assert grads.steps_with_grad > 0, (
            f"{name} changed the images but no optimiser step saw an image gradient")

    # the evaluator can train on it
    (run,) = evaluate(syn, data, get_protocol("quick", epochs=1, num_eval_runs=1),
                      "convnet", progress=False)
    assert 0.0 <= run.test_acc <= 100.0


@pytest.mark.parametrize("name", method_params())
def test_method_rejects_bad_arguments(name):
    with pytest.raises(ValueError, match="no_such_option"):
        create_method(name, no_such_option=1)
    with pytest.raises(ValueError, match="ipc=0"):
        Cell(name, "mnist", 0)
    with pytest.raises(ValueError, match="shots=-1"):
        Cell(name, "mnist", 1, shots=-1)
