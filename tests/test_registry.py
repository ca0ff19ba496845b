"""The one registry behind methods, datasets, backbones and protocols."""
from __future__ import annotations

from importlib import metadata

import pytest

from distill_bench.method import METHODS, DistillationMethod, register_method
from distill_bench.registry import Registry, UnknownNameError


def _fruit_registry() -> Registry:
    reg = Registry("fruit")
    for name in ("apple", "apricot", "banana"):
        reg.register(name, object())
    return reg


def test_decorator_registration_returns_the_object():
    reg = Registry("thing")

    @reg.register("square")
    def square(x):
        return x * x
    assert reg.get("square") is square and square(3) == 9
    assert "square" in reg and "circle" not in reg


def test_duplicate_name_is_an_error_naming_the_first_source():
    reg = Registry("thing")
    reg.register("a", 1)
    reg.register("a", 1, source="package one")  # the same object again is harmless
    with pytest.raises(ValueError, match="already registered") as err:
        reg.register("a", 2)
    assert "package one" in str(err.value) and "'a'" in str(err.value)
    assert reg.get("a") == 1


def test_unknown_name_lists_known_names_and_suggests():
    reg = _fruit_registry()
    with pytest.raises(UnknownNameError) as err:
        reg.get("bananna")
    message = str(err.value)
    assert "Did you mean 'banana'?" in message
    assert "apple, apricot, banana" in message and "unknown fruit 'bananna'" in message
    assert isinstance(err.value, KeyError)

    with pytest.raises(UnknownNameError) as err:
        reg.get("zzz")
    assert "Did you mean" not in str(err.value) and "banana" in str(err.value)


def test_wildcard_list():
    reg = _fruit_registry()
    assert reg.list() == ["apple", "apricot", "banana"]
    assert reg.list("ap*") == ["apple", "apricot"]
    assert reg.list("*an*") == ["banana"]
    assert reg.list("kiwi*") == []


def test_random_comes_from_its_entry_point():
    declared = {ep.name: ep.value for ep in metadata.entry_points(group="distill_bench.methods")}
    assert declared.get("random") == "baselines.random_subset:RandomSubset"

    fresh = Registry("method", entry_point_group="distill_bench.methods")
    cls = fresh.get("random")
    from baselines.random_subset import RandomSubset
    assert cls is RandomSubset and issubclass(cls, DistillationMethod)
    assert fresh.source("random") == "entry point baselines.random_subset:RandomSubset"
    assert "random" in METHODS.list()


def test_broken_entry_point_is_reported_not_called_unknown(monkeypatch):
    broken = metadata.EntryPoint("broken-method", "no_such_module_xyz:Method", "test.group")
    monkeypatch.setattr(metadata, "entry_points", lambda group: [broken])
    reg = Registry("method", entry_point_group="test.group")
    assert reg.list() == []  # a broken plugin does not break listing
    with pytest.raises(UnknownNameError, match="failed to load") as err:
        reg.get("broken-method")
    assert "no_such_module_xyz" in str(err.value)


def test_register_method_requires_a_method_class():
    with pytest.raises(TypeError, match="DistillationMethod"):
        register_method("not-a-method")(object)
    with pytest.raises(ValueError, match="already registered"):
        @register_method("random")
        class Impostor(DistillationMethod):
            pass
