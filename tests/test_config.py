"""Run configs: YAML files, typed options, precedence, and reproducing a row from a saved one."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from distill_bench import cli
from distill_bench.config import (RUN_DEFAULTS, coerce_options, dump_config, load_config,
                                  resolve_run_config, typed_options)
from distill_bench.method import MethodConfig, get_method
from distill_bench.registry import UnknownNameError
from distill_bench.runner import Cell
from tiny_data import tiny_env

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@dataclass
class ToyConfig(MethodConfig):
    """Every field type a method config uses."""
    iterations: int = 10
    lr: float = 0.1
    zca: bool = False
    init: str = "real"
    width: int | None = None
    sizes: tuple[int, ...] = (1, 2)
    names: list[str] = field(default_factory=lambda: ["a"])

    def __post_init__(self):
        if self.iterations < 0:
            raise ValueError(f"iterations={self.iterations}: must be >= 0")


def test_yaml_round_trip_and_file_errors(tmp_path):
    values = {"method": "dm", "ipc": [1, 10], "shots": 0, "options": {"sizes": (3, 4)}}
    path = tmp_path / "run.yaml"
    text = dump_config(values, path, header="a comment\nsecond line")
    assert text.startswith("# a comment\n# second line\n")
    assert load_config(path) == {"method": "dm", "ipc": [1, 10], "shots": 0,
                                 "options": {"sizes": [3, 4]}}
    (tmp_path / "bad.yaml").write_text("method: dm\nipcs: 1\n")
    with pytest.raises(ValueError, match="unknown key\\(s\\) \\['ipcs'\\]; allowed"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- dm\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "opts.yaml").write_text("method: dm\noptions: 3\n")
    with pytest.raises(ValueError, match="'options' must be a mapping"):
        load_config(tmp_path / "opts.yaml")
    (tmp_path / "broken.yaml").write_text("method: [dm\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_options_typed_as_a_person_types_them():
    typed = coerce_options(ToyConfig, {
        "iterations": "20", "lr": "1e-3", "zca": "yes", "init": "none", "width": "none",
        "sizes": "3,4", "names": "x,y"})  # all text, as from --set
    assert typed == {"iterations": 20, "lr": 1e-3, "zca": True, "init": "none",
                     "width": None, "sizes": (3, 4), "names": ["x", "y"]}
    from_yaml = coerce_options(ToyConfig, {"lr": 1, "zca": False, "sizes": [5], "width": 7,
                                           "iterations": 3.0})
    assert from_yaml == {"lr": 1.0, "zca": False, "sizes": (5,), "width": 7, "iterations": 3}
    assert isinstance(from_yaml["lr"], float)
    assert coerce_options(ToyConfig, {"zca": "off", "sizes": "7"}) == {"zca": False,
                                                                         "sizes": (7,)}


@pytest.mark.parametrize("options, message", [
    ({"iterations": "2.5"}, "iterations='2.5'|iterations=2.5: expected an integer"),
    ({"lr": "fast"}, "lr='fast': expected a number"),
    ({"zca": "maybe"}, "zca='maybe': expected true or false"),
    ({"iteration": 3}, "unknown option\\(s\\) \\['iteration'\\].*allowed"),
    ({"iterations": -1}, "iterations=-1: must be >= 0"),
])
def test_bad_options_name_the_value_and_the_fix(options, message):
    with pytest.raises(ValueError, match=message):
        coerce_options(ToyConfig, options)


def test_parse_value_reads_what_a_person_types():
    assert [cli.parse_value(v) for v in ("true", "Yes", "off", "none", "3", "0.5")] == [
        True, True, False, None, 3, 0.5]
    assert cli.parse_value("1,10") == [1, 10] and cli.parse_value("[1, 2]") == [1, 2]
    assert cli.parse_value("a, b") == ["a", "b"] and cli.parse_value("convnet") == "convnet"


def test_precedence_defaults_file_command_line():
    file_values = {"method": "random", "dataset": "mnist", "ipc": "1,10", "seed": 3,
                   "protocol": "quick", "epochs": 7}
    resolved = resolve_run_config(file_values, {"ipc": [2], "precision": "bf16"})
    assert resolved["method"] == ["random"] and resolved["dataset"] == "mnist"
    assert resolved["ipc"] == [2] and resolved["seed"] == [3]
    assert resolved["precision"] == "bf16" and resolved["epochs"] == 7
    assert resolved["backbone"] == RUN_DEFAULTS["backbone"] and resolved["shots"] == "all"
    with pytest.raises(ValueError, match="no method given"):
        resolve_run_config({}, {})
    with pytest.raises(ValueError, match="ipc='x': expected integers"):
        resolve_run_config({"method": "random", "ipc": "x"}, {})
    with pytest.raises(UnknownNameError, match="unknown method 'randm'"):
        resolve_run_config({"method": "randm"}, {})


def test_set_overrides_an_option_of_the_file():
    if "dm" not in cli_methods():
        pytest.skip("method dm is not registered")
    resolved = resolve_run_config({"method": "dm", "options": {"iterations": 5, "lr_img": 2}},
                                  {}, {"iterations": "7"})
    assert resolved["options"] == {"iterations": 7, "lr_img": 2.0}


def cli_methods() -> list[str]:
    from distill_bench.method import list_methods
    return list_methods()


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: p.stem)
def test_committed_configs_are_valid(path):
    values = load_config(path)
    assert path.parent.name == values["method"], "configs/<method>/ holds that method's files"
    try:
        get_method(values["method"])
    except UnknownNameError as err:
        pytest.skip(f"method {values['method']!r} cannot be loaded here: {err}")
    typed = typed_options(values["method"], values["options"])
    config = get_method(values["method"]).Config.from_dict(typed)
    assert config.to_dict() == {**config.to_dict(), **typed}
    Cell(values["method"], values["dataset"], values["ipc"], values["shots"],
         values["backbone"], values["protocol"], values["seed"], values["precision"])
    assert f"ipc{values['ipc']}" in path.stem


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    for key, value in tiny_env(tmp_path, train_per_class=4, test_per_class=5).items():
        monkeypatch.setenv(key, value)
    return tmp_path


def _rows(results: Path) -> list[dict]:
    return [json.loads(line) for line in (results / "runs.jsonl").read_text().splitlines()]


def test_saved_config_reproduces_the_row(tiny, capsys, caplog):
    config = tiny / "random.yaml"
    dump_config({"method": "random", "dataset": "mnist", "ipc": 1, "shots": 2,
                 "protocol": "quick", "epochs": 2, "num_eval_runs": 1}, config)
    first, second = tiny / "first", tiny / "second"
    assert cli.main(["run", "--config", str(config), "--results-dir", str(first),
                     "--no-progress"]) == 0
    saved = sorted((first / "configs").glob("*.yaml"))
    assert len(saved) == 1 and saved[0].name.startswith("random-mnist-ipc1-shots2-s0-")
    values = load_config(saved[0])
    assert values["options"] == {} and values["shots"] == 2 and values["epochs"] == 2
    assert cli.main(["run", "--config", str(saved[0]), "--results-dir", str(second),
                     "--no-progress"]) == 0
    (a,), (b,) = _rows(first), _rows(second)
    for key in ("run_key", "config_id", "test_acc", "ipc", "shots", "protocol_config"):
        assert a[key] == b[key], key
    assert Path(a["synthetic_set"]).name == Path(b["synthetic_set"]).name

    # a flag typed on the command line beats the file
    assert cli.main(["run", "--config", str(saved[0]), "--ipc", "2", "--results-dir",
                     str(second), "--no-progress"]) == 0
    assert [r["ipc"] for r in _rows(second)] == [1, 2]

    # a saved config whose data changed says so (the cell itself is already done)
    values["expect"]["data_checksum"] = "0" * 64
    dump_config(values, tiny / "tampered.yaml")
    with caplog.at_level(logging.WARNING):
        assert cli.main(["run", "--config", str(tiny / "tampered.yaml"), "--results-dir",
                         str(first), "--no-progress"]) == 0
    assert "config expects data checksum 000000000000" in caplog.text
    assert len(_rows(first)) == 1


def test_run_errors_from_config_are_clean(tiny, capsys):
    bad = tiny / "bad.yaml"
    dump_config({"method": "random", "dataset": "mnist", "options": {"colour": 1}}, bad)
    assert cli.main(["run", "--config", str(bad), "--results-dir", str(tiny / "r")]) == 2
    assert "unknown option(s) ['colour']" in capsys.readouterr().err
    assert cli.main(["run", "--dataset", "mnist", "--results-dir", str(tiny / "r")]) == 2
    assert "no method given" in capsys.readouterr().err
    assert cli.main(["run", "--method", "random", "--set", "x", "--print-config"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_print_config_is_a_loadable_config(tiny, capsys):
    assert cli.main(["run", "--method", "random", "--dataset", "mnist", "--ipc", "2",
                     "--shots", "5", "--print-config"]) == 0
    path = tiny / "printed.yaml"
    path.write_text(capsys.readouterr().out)
    values = load_config(path)
    assert (values["method"], values["ipc"], values["shots"]) == ("random", 2, 5)


def test_non_default_options_are_reported():
    from distill_bench.config import non_default_options

    assert non_default_options("random", {}) == {}
    if "dm" not in cli_methods():
        pytest.skip("method dm is not registered")
    default = get_method("dm").Config().iterations
    assert non_default_options("dm", {"iterations": default + 1, "lr_img":
                                      get_method("dm").Config().lr_img}) == {
        "iterations": (default + 1, default)}
