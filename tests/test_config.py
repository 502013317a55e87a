import pytest

from lmshrink.config import (
    apply_overrides,
    dump_yaml,
    from_dict,
    load_yaml,
    set_dotted,
    to_dict,
)
from lmshrink.errors import ConfigError
from lmshrink.finetune import FinetuneConfig


def test_from_dict_builds_nested_sections_and_converts_types():
    cfg = from_dict(
        FinetuneConfig,
        {
            "model": "m",
            "train": {"lr": "3e-5", "epochs": 2},
            "data": {"text_columns": "a, b", "regression": "yes"},
        },
    )
    assert cfg.train.lr == pytest.approx(3e-5)
    assert cfg.train.epochs == 2.0 and isinstance(cfg.train.epochs, float)
    assert cfg.data.text_columns == ["a", "b"]
    assert cfg.data.regression is True


def test_unknown_key_names_the_dotted_key_and_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.lrr'.*lr"):
        from_dict(FinetuneConfig, {"train": {"lrr": 1.0}})


def test_mistyped_values_are_refused():
    with pytest.raises(ConfigError, match="train.batch_size.*whole number"):
        from_dict(FinetuneConfig, {"train": {"batch_size": "many"}})
    with pytest.raises(ConfigError, match="train.batch_size.*whole number"):
        from_dict(FinetuneConfig, {"train": {"batch_size": 3.5}})
    with pytest.raises(ConfigError, match="overwrite.*true or false"):
        from_dict(FinetuneConfig, {"overwrite": "maybe"})


def test_dotted_overrides_parse_yaml_scalars():
    cfg = FinetuneConfig()
    apply_overrides(cfg, ["train.lr=1e-4", "data.max_length=64", "overwrite=true"])
    assert (cfg.train.lr, cfg.data.max_length, cfg.overwrite) == (1e-4, 64, True)
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(cfg, ["train.lr"])
    with pytest.raises(ConfigError, match="is a section"):
        set_dotted(cfg, "train", 1)


def test_yaml_round_trip(tmp_path):
    cfg = FinetuneConfig(model="packaged:minilm", out="runs/x")
    cfg.seed = 7
    cfg.data.labels = ["neg", "pos"]
    dump_yaml(cfg, tmp_path / "c.yaml")
    assert to_dict(load_yaml(FinetuneConfig, tmp_path / "c.yaml")) == to_dict(cfg)


def test_bad_yaml_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: {lr: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml.*not valid YAML"):
        load_yaml(FinetuneConfig, path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(FinetuneConfig, tmp_path / "missing.yaml")


def test_lists_of_sections_and_mappings_are_typed():
    import dataclasses

    from lmshrink.config import option

    @dataclasses.dataclass
    class Part:
        name: str = option("", "part name")
        params: dict[str, float] = option({}, "free parameters")

    @dataclasses.dataclass
    class Whole:
        parts: list[Part] = option([Part(name="default")], "the parts")

    a, b = Whole(), Whole()
    assert a.parts == [Part(name="default")] and a.parts[0] is not b.parts[0]
    cfg = from_dict(Whole, {"parts": [{"name": "x", "params": {"t": 2}}, {"name": "y"}]})
    assert cfg.parts == [Part("x", {"t": 2}), Part("y", {})]
    with pytest.raises(ConfigError, match=r"unknown config key 'parts\.nme'"):
        from_dict(Whole, {"parts": [{"nme": "x"}]})
    with pytest.raises(ConfigError, match="parts.params.*mapping"):
        from_dict(Whole, {"parts": [{"params": [1]}]})


def test_a_renamed_key_is_an_error_that_names_its_new_key(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("train: {seed: 7, lr: 1.0e-4}\n")
    with pytest.raises(ConfigError, match="'train.seed' is now 'seed'"):
        load_yaml(FinetuneConfig, path)
    with pytest.raises(ConfigError, match="'train.progress' is now 'progress'"):
        set_dotted(FinetuneConfig(), "train.progress", False)
    # a key that was never valid keeps the unknown-key message
    with pytest.raises(ConfigError, match="unknown config key 'train.sed'"):
        set_dotted(FinetuneConfig(), "train.sed", 1)


def test_command_configs_share_one_key_per_idea():
    """The run, evaluation and speed blocks are inherited, never redeclared: each of these
    keys is declared by one class of lmshrink.config, whatever command takes it."""
    import dataclasses

    from lmshrink import config
    from lmshrink.bench import BenchConfig
    from lmshrink.evaluate import EvaluateConfig
    from lmshrink.export import ExportConfig
    from lmshrink.quantize import QuantizeConfig
    from lmshrink.report import ReportConfig

    blocks = {
        "out": config.OutputSettings,
        "overwrite": config.OutputSettings,
        "seed": config.ProcessSettings,
        "progress": config.ProcessSettings,
        "threads": config.ProcessSettings,
        "eval_batch_size": config.EvalSettings,
        "speed_examples": config.SpeedSettings,
        "rounds": config.SpeedSettings,
        "speed_batch_sizes": config.BatchSpeedSettings,
    }
    commands = (ExportConfig, QuantizeConfig, EvaluateConfig, BenchConfig, ReportConfig)
    for cls in (*commands, FinetuneConfig):
        for field in dataclasses.fields(cls):
            if field.name in blocks:
                assert issubclass(cls, blocks[field.name]), (cls.__name__, field.name)
                # the inherited field object itself: same help text, same default
                assert field is blocks[field.name].__dataclass_fields__[field.name]
    names = {cls.__name__: {f.name for f in dataclasses.fields(cls)} for cls in commands}
    assert all("batch_size" not in fields for fields in names.values())
    assert all("eval_batch_size" in names[c] for c in ("QuantizeConfig", "EvaluateConfig"))
    assert not {"seed", "progress", "threads"} & names["ReportConfig"]


@pytest.mark.parametrize(
    ("command", "old", "new"),
    [
        ("evaluate", "batch_size", "eval_batch_size"),
        ("quantize", "batch_size", "eval_batch_size"),
        ("bench", "batch_size", "eval_batch_size"),
        ("bench", "batch_sizes", "speed_batch_sizes"),
    ],
)
def test_renamed_command_keys_name_their_new_key(command, old, new):
    import importlib

    cls = getattr(importlib.import_module(f"lmshrink.{command}"), f"{command.title()}Config")
    with pytest.raises(ConfigError, match=f"'{old}' is now '{new}'"):
        from_dict(cls, {old: 1})
    with pytest.raises(ConfigError, match=f"'{old}' is now '{new}'"):
        set_dotted(cls(), old, 1)
