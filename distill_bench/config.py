"""Run configurations in YAML: load, merge with the command line, save beside results.

A config file holds what ``distill-bench run`` takes on the command line::

    method: deepkkt            # one name, or a list
    dataset: cifar10-jpeg75
    ipc: 1                     # one value, or a list
    shots: 0                   # 0, an integer, or all
    backbone: convnet          # one name, or a list (cross-architecture evaluation)
    protocol: standard
    seed: 0                    # one value, or a list
    precision: fp32
    num_eval_runs: null        # null: the protocol's
    epochs: null               # null: the protocol's
    options:                   # the method's Config fields
      iterations: 500

Precedence: built-in defaults < the file < flags given on the command line (``--set
key=value`` overrides one option). Method options are typed against the method's ``Config``
dataclass, so ``1e-3`` (a string to YAML 1.1) becomes a float and a typo is an error that
lists the allowed fields. After each cell, ``save_cell_config`` writes the fully resolved
config to ``<results>/configs/``; ``distill-bench run --config`` of that file reproduces
the row (same synthetic-set name, config id and run key).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from distill_bench.method import MethodConfig, get_method

logger = logging.getLogger(__name__)

# the keys of a run config, with the command line's defaults (lists: the CLI loops over them)
RUN_DEFAULTS: dict[str, Any] = {
    "method": None, "dataset": "cifar10-jpeg75", "ipc": [1], "shots": "all",
    "backbone": ["convnet"], "protocol": "standard", "seed": [0], "precision": "fp32",
    "num_eval_runs": None, "epochs": None,
}
LIST_KEYS = ("method", "ipc", "backbone", "seed")
INT_KEYS = ("ipc", "seed", "num_eval_runs", "epochs")
OPTIONS_KEY = "options"
EXPECT_KEY = "expect"           # informational: what the saved run produced
CONFIG_DIR = "configs"          # under the results folder


def load_config(path: str | os.PathLike) -> dict:
    """Read a run config file; unknown keys are an error naming the allowed ones."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML ({err})") from err
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping of run settings, not "
                         f"{type(values).__name__}")
    allowed = set(RUN_DEFAULTS) | {OPTIONS_KEY, EXPECT_KEY}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}; allowed: {sorted(allowed)}; "
                         f"method settings go under '{OPTIONS_KEY}:'")
    options = values.get(OPTIONS_KEY) or {}
    if not isinstance(options, dict):
        raise ValueError(f"{path}: '{OPTIONS_KEY}' must be a mapping of method settings")
    values[OPTIONS_KEY] = {str(k).replace("-", "_"): v for k, v in options.items()}
    return values


def dump_config(values: dict, path: str | os.PathLike | None = None,
                header: str = "") -> str:
    """YAML text of a run config (tuples as lists); also written to ``path`` if given."""
    plain = _plain(values)
    text = yaml.safe_dump(plain, sort_keys=False, default_flow_style=False, width=88)
    text = "".join(f"# {line}\n" for line in header.splitlines()) + text
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return text


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


# --- typing method options against their Config dataclass ----------------------------------

def _field_types(config_cls: type[MethodConfig]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(config_cls)
    except Exception:  # unresolvable annotations: fall back to the default's type
        return {f.name: type(f.default) for f in dataclasses.fields(config_cls)
                if f.default is not dataclasses.MISSING}


def _coerce(value: Any, kind: Any, name: str) -> Any:
    """``value`` converted to the annotated ``kind`` where a person's typing is ambiguous."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(kind)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, name)
            except (TypeError, ValueError):
                continue
        return value
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "yes", "on", "1"):
            return True
        if text in ("false", "no", "off", "0"):
            return False
        raise ValueError(f"option {name}={value!r}: expected true or false")
    if kind is float:
        if isinstance(value, bool):
            raise ValueError(f"option {name}={value!r}: expected a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"option {name}={value!r}: expected a number") from None
    if kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"option {name}={value!r}: expected an integer")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ValueError(f"option {name}={value!r}: expected an integer") from None
    if kind is str:
        return value if isinstance(value, str) else str(value)
    if origin in (tuple, list) or kind in (tuple, list):
        items = value if isinstance(value, (list, tuple)) else [value]
        args = [a for a in typing.get_args(kind) if a is not Ellipsis]
        if args and len(set(args)) == 1:
            items = [_coerce(v, args[0], name) for v in items]
        return tuple(items) if (origin or kind) is tuple else list(items)
    return value


def _is_text_type(kind: Any) -> bool:
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    return kind is str or (typing.get_origin(kind) in (typing.Union, types.UnionType)
                           and args == [str])


def _from_text(text: str, kind: Any, name: str) -> Any:
    """A value typed as text (``--set``, or a YAML string) read for field type ``kind``:
    text fields keep it verbatim (``none`` stays "none" unless the field is optional),
    others parse it as a person types it (``true``, ``1e-3``, ``1,10``)."""
    from distill_bench.cli import parse_value

    if _is_text_type(kind):
        optional = kind is not str
        return None if optional and text.strip().lower() in ("none", "null") else text
    return _coerce(parse_value(text), kind, name)


def coerce_options(config_cls: type[MethodConfig], options: dict) -> dict:
    """``options`` typed by the fields of ``config_cls``; unknown names raise with the
    allowed ones, and the Config is built once so its cross-field checks run too."""
    types_ = _field_types(config_cls)
    typed = {}
    for key, value in options.items():
        if key not in types_:
            typed[key] = value  # from_dict below names it and the allowed fields
        elif isinstance(value, str):
            typed[key] = _from_text(value, types_[key], key)
        else:
            typed[key] = _coerce(value, types_[key], key)
    config_cls.from_dict(typed)  # raises on unknown keys and invalid values
    return typed


def typed_options(method: str, options: dict) -> dict:
    """``options`` typed by the registered ``method``'s Config (see ``coerce_options``)."""
    return coerce_options(get_method(method).Config, options)


# --- merging file and command line -----------------------------------------------------------

def _as_list(value: Any, key: str) -> list:
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = [value]
    if key in INT_KEYS:
        try:
            items = [int(v) for v in items]
        except (TypeError, ValueError):
            raise ValueError(f"{key}={value!r}: expected integers") from None
    return items


def resolve_run_config(file_values: dict | None, cli_values: dict,
                       cli_options: dict | None = None) -> dict:
    """Defaults < file < command line (``None`` there means "not given").

    Returns a dict with every ``RUN_DEFAULTS`` key (``LIST_KEYS`` as lists) and the
    merged, typed method ``options``.
    """
    file_values = dict(file_values or {})
    resolved = {}
    for key, default in RUN_DEFAULTS.items():
        value = cli_values.get(key)
        if value is None:
            value = file_values.get(key, default)
        if key in LIST_KEYS and value is not None:
            value = _as_list(value, key)
        elif key in INT_KEYS and value is not None:
            value = _as_list(value, key)[0]
        resolved[key] = value
    if not resolved["method"]:
        raise ValueError("no method given: use --method NAME or a config file with "
                         "'method:' (see `distill-bench list methods`)")
    resolved["shots"] = str(resolved["shots"])
    options = {**(file_values.get(OPTIONS_KEY) or {}), **(cli_options or {})}
    typed = {}
    for method in resolved["method"]:
        typed.update(typed_options(method, options))
    resolved[OPTIONS_KEY] = typed
    resolved[EXPECT_KEY] = file_values.get(EXPECT_KEY) or {}
    return resolved


def set_options(pairs: list[str] | None) -> dict:
    """``--set KEY=VALUE`` pairs as text (typed later, by the method's Config)."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set iterations=100")
        key, value = pair.split("=", 1)
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def resolve_run_args(args):
    """Fill ``args`` of ``distill-bench run`` from ``--config`` and the defaults.

    Sets every ``RUN_DEFAULTS`` key on ``args`` and ``args.options`` (method options from
    the file, overridden by ``--set``, typed by the method's Config).
    """
    path = getattr(args, "config", None)
    file_values = load_config(path) if path else None
    cli_values = {key: getattr(args, key, None) for key in RUN_DEFAULTS}
    cli_options = set_options(getattr(args, "set", None))
    resolved = resolve_run_config(file_values, cli_values, cli_options)
    for key in RUN_DEFAULTS:
        setattr(args, key, resolved[key])
    args.options = resolved[OPTIONS_KEY]
    args.expect = resolved[EXPECT_KEY]
    if path:
        logger.info("config %s resolved to %s", path, {k: resolved[k] for k in RUN_DEFAULTS})
    for method in resolved["method"]:  # say what differs from the method's own defaults
        changed = non_default_options(method, args.options)
        if changed:
            logger.info("%s options that differ from its defaults: %s", method, changed)
    return args


def non_default_options(method: str, options: dict) -> dict:
    """``{name: (value, default)}`` for the options that change ``method``'s defaults."""
    defaults = get_method(method).Config().to_dict()
    typed = get_method(method).Config.from_dict(options).to_dict()
    return {k: (typed[k], defaults[k]) for k in options
            if k in defaults and typed[k] != defaults[k]}


def printable_config(args) -> dict:
    """The resolved run config of ``args`` as a file would hold it: one-element lists as
    scalars and, for a single method, every option of its Config (defaults included)."""
    values = {}
    for key in RUN_DEFAULTS:
        value = getattr(args, key)
        values[key] = value[0] if isinstance(value, list) and len(value) == 1 else value
    if str(values["shots"]).isdigit():
        values["shots"] = int(values["shots"])
    options = args.options
    if len(args.method) == 1:
        options = get_method(args.method[0]).Config.from_dict(options).to_dict()
    values[OPTIONS_KEY] = options
    return values


# --- saving the resolved config of a cell --------------------------------------------------

def cell_config(cell, method=None) -> dict:
    """The fully resolved config of one cell: every method option, not just overrides."""
    from distill_bench.method import create_method

    method = method or create_method(cell.method, **cell.method_options)
    values = {"method": cell.method, "dataset": cell.dataset, "ipc": cell.ipc,
              "shots": cell.shots, "backbone": cell.backbone, "protocol": cell.protocol,
              "seed": cell.seed, "precision": cell.precision,
              "num_eval_runs": cell.protocol_options.get("num_eval_runs"),
              "epochs": cell.protocol_options.get("epochs"),
              OPTIONS_KEY: method.config.to_dict()}
    return values


def cell_config_path(cell, set_name: str, results_dir: str | os.PathLike) -> Path:
    """``<results>/configs/<set>-<backbone>-<protocol>-<precision>[-<overrides>].yaml``."""
    parts = [set_name, cell.backbone, cell.protocol, cell.precision]
    parts += [f"{k}{v}" for k, v in sorted(cell.protocol_options.items())]
    return Path(results_dir) / CONFIG_DIR / ("-".join(str(p) for p in parts) + ".yaml")


def save_cell_config(cell, results_dir: str | os.PathLike | None, data) -> Path:
    """Write the cell's resolved config beside its results; returns the file."""
    from distill_bench.method import create_method
    from distill_bench.results import config_hash, get_results_dir
    from distill_bench.runner import set_name

    method = create_method(cell.method, **cell.method_options)
    name = set_name(cell, method, data)
    path = cell_config_path(cell, name, get_results_dir(results_dir))
    values = cell_config(cell, method)
    values[EXPECT_KEY] = {"synthetic_set": name, "config_id": config_hash(
        method.config.to_dict()), "data_checksum": data.checksum}
    header = (f"Resolved config of one result cell (written by distill-bench run).\n"
              f"Reproduce the row: distill-bench run --config {path.name}")
    dump_config(values, path, header)
    return path


def check_expected(cell, data, expect: dict) -> None:
    """Warn when a saved config no longer reproduces its recorded set (changed data or
    defaults); the run proceeds, under a new set name."""
    if not expect:
        return
    from distill_bench.method import create_method
    from distill_bench.runner import set_name

    if expect.get("data_checksum") and expect["data_checksum"] != data.checksum:
        logger.warning("config expects data checksum %s but %s has %s: results will differ",
                       expect["data_checksum"][:12], data.name, data.checksum[:12])
    name = set_name(cell, create_method(cell.method, **cell.method_options), data)
    if expect.get("synthetic_set") and expect["synthetic_set"] != name:
        logger.warning("config was saved for synthetic set %s; this run makes %s (the "
                       "method or its defaults changed)", expect["synthetic_set"], name)
