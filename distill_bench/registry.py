"""One small registry for methods, datasets, backbones and protocols.

Components register with a decorator; ``list`` takes shell wildcards; a duplicate name is an
error; an unknown name fails with the known ones and a "did you mean" hint. Methods can also
come from other installed packages through the ``distill_bench.methods`` entry-point group,
which is how ``baselines/`` and ``methods/`` register themselves too.
"""
from __future__ import annotations

import difflib
import fnmatch
import logging
from importlib import metadata
from typing import Any, Callable

logger = logging.getLogger(__name__)


class UnknownNameError(KeyError):
    """A name that is not registered; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry:
    """Name -> object mapping with decorator registration.

    Args:
        kind: what is registered ("method", "dataset", ...), used in messages.
        entry_point_group: optional entry-point group loaded on first lookup.
    """

    def __init__(self, kind: str, entry_point_group: str | None = None):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._items: dict[str, Any] = {}
        self._sources: dict[str, str] = {}
        self._broken: dict[str, tuple[str, str]] = {}  # failed entry point -> (where, why)
        self._entry_points_loaded = entry_point_group is None

    def register(self, name: str, obj: Any = None, *, source: str = "builtin") -> Callable:
        """Register ``obj`` under ``name``; usable as ``@registry.register("name")``."""
        if obj is None:
            return lambda o: self.register(name, o, source=source)
        if name in self._items and self._items[name] is not obj:
            raise ValueError(f"{self.kind} {name!r} is already registered "
                             f"(by {self._sources[name]}); pick another name")
        self._items[name] = obj
        self._sources[name] = source
        return obj

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in metadata.entry_points(group=self.entry_point_group):
            if ep.name in self._items:
                continue
            try:
                self.register(ep.name, ep.load(), source=f"entry point {ep.value}")
            except Exception as err:  # a broken plugin must not break the harness
                self._broken[ep.name] = (ep.value, f"{type(err).__name__}: {err}")
                logger.debug("could not load %s %r from %s: %s",
                               self.kind, ep.name, ep.value, err)

    def get(self, name: str) -> Any:
        self._load_entry_points()
        if name in self._broken and name not in self._items:
            where, why = self._broken[name]
            raise UnknownNameError(f"{self.kind} {name!r} is declared by the entry point "
                                   f"{where} but failed to load ({why}); fix that import")
        if name not in self._items:
            known = sorted(self._items)
            hint = difflib.get_close_matches(name, known, n=1)
            did_you_mean = f" Did you mean {hint[0]!r}?" if hint else ""
            raise UnknownNameError(f"unknown {self.kind} {name!r}.{did_you_mean} "
                                   f"Known {self.kind}s: {', '.join(known)}")
        return self._items[name]

    def list(self, pattern: str = "*") -> list[str]:
        self._load_entry_points()
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def source(self, name: str) -> str:
        self.get(name)
        return self._sources[name]

    def __contains__(self, name: str) -> bool:
        self._load_entry_points()
        return name in self._items
