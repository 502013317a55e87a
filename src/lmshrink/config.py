"""Typed configs: dataclasses with one description per field, saved as YAML.

A config value comes, in increasing priority, from the dataclass default, a YAML file
(`--config run.yaml`), a command-line flag generated from the field (`--lr 3e-5`), and a
dotted-key override (`--set train.lr=3e-5`). Every key is checked against the fields, so
a typo is an error instead of a silently ignored setting.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from lmshrink.errors import ConfigError

T = TypeVar("T")


def option(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with its help text (shown by `--help` and used as documentation)."""
    if isinstance(default, (list, dict)):
        # Mutable defaults need a factory so that configs never share one list.
        return dataclasses.field(
            default_factory=lambda: copy.deepcopy(default), metadata={"help": help, **kwargs}
        )
    return dataclasses.field(default=default, metadata={"help": help, **kwargs})


@dataclasses.dataclass
class DataConfig:
    """Which task and data to use (GLUE folder, hub, or custom files)."""

    task: str = option(
        "",
        "GLUE task name (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli) "
        "or 'custom' with --train-file/--dev-file.",
    )
    data_dir: str = option(
        "", "GLUE glue_data folder (holding SST-2/, CoLA/, ...); empty: load from the dataset hub."
    )
    train_file: str = option("", "custom task: training file (.csv, .tsv or .jsonl).")
    dev_file: str = option("", "custom task: dev file (.csv, .tsv or .jsonl).")
    test_file: str = option("", "custom task: test file (.csv, .tsv or .jsonl), optional.")
    text_columns: list[str] = option([], "custom task: one or two text column names.")
    label_column: str = option("label", "custom task: label column name.")
    labels: list[str] = option(
        [], "custom task: label set in id order; empty: inferred (sorted) from the training file."
    )
    regression: bool = option(False, "custom task: the label is a real number.")
    max_length: int = option(128, "maximum tokens per example (longer inputs are truncated).")
    max_train_samples: int = option(
        0, "use a fixed-seed random subset of this many training rows (0: all)."
    )
    num_labeled: int = option(
        0,
        "low-resource mode: only a fixed-seed subset of this many training rows keeps its "
        "gold label (0: all); distill uses the rest as unlabeled transfer data.",
    )
    max_eval_samples: int = option(
        0, "use a fixed-seed random subset of this many evaluation rows (0: all)."
    )


# --- blocks shared by the commands: each idea is described once, under one key ----------


@dataclasses.dataclass
class OutputSettings:
    """Where a command writes its output folder (`lmshrink report` takes only this block)."""

    out: str = option("", "output folder.")
    overwrite: bool = option(False, "replace --out if it already holds another run.")


@dataclasses.dataclass
class ProcessSettings:
    """How a command that runs models runs: seed, progress bars, CPU threads (`evaluate` and
    `bench`, which write no output folder, take only this block)."""

    seed: int = option(42, "random seed (initialisation, data order, subsets).")
    progress: bool = option(True, "show progress bars.")
    threads: int = option(0, "CPU threads for PyTorch (0: its default).")


@dataclasses.dataclass
class RunSettings(ProcessSettings, OutputSettings):
    """What every command that writes an output folder takes (inherited, so these keys sit at
    the top level of each command's config: `out`, `seed`, ...), in this order: out,
    overwrite, seed, progress, threads."""


@dataclasses.dataclass
class ResumableRunSettings(RunSettings):
    """A run settings block for commands that train (and so can be killed and resumed)."""

    resume: bool = option(False, "continue the run in --out from its last checkpoint.")
    checkpoint_every: int = option(200, "write a resumable checkpoint every N training steps.")


@dataclasses.dataclass
class OptimSettings:
    """The optimiser and schedule of one training phase (finetune's `train`, each distill
    stage, prune's recovery): AdamW with linear warmup, then linear decay."""

    epochs: float = option(3.0, "number of passes over the training data.")
    batch_size: int = option(32, "training batch size (per process).")
    lr: float = option(5e-5, "peak learning rate (AdamW).")
    weight_decay: float = option(0.01, "AdamW weight decay (not applied to biases and norms).")
    warmup_ratio: float = option(0.1, "share of steps with linear warmup before linear decay.")


@dataclasses.dataclass
class EvalSettings:
    """How a model is scored on dev: one key for the evaluation batch size in every command."""

    eval_batch_size: int = option(128, "evaluation batch size.")


@dataclasses.dataclass
class TrainConfig(EvalSettings, OptimSettings):
    """Optimiser, schedule and loop settings of a training command (fields in this order:
    OptimSettings', eval_batch_size, then the loop's)."""

    max_grad_norm: float = option(1.0, "gradient clipping norm (0: off).")
    eval_every: int = option(0, "also evaluate on dev every N steps (0: once per epoch).")


@dataclasses.dataclass
class SpeedSettings:
    """How CPU speed is measured: models interleaved on the dev texts, the median kept."""

    speed_examples: int = option(256, "dev examples per timing round at each batch size.")
    rounds: int = option(3, "timing rounds (models take turns; the median is kept).")


@dataclasses.dataclass
class BatchSpeedSettings(SpeedSettings):
    """Speed measured at batch sizes the user chooses (`quantize`, `bench`)."""

    speed_batch_sizes: list[int] = option(
        [1, 32],
        "batch sizes timed (latency percentiles come from batch size 1; quantize's best "
        "backend is the fastest at the first size).",
    )


# --- conversion -----------------------------------------------------------------------


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain nested dict of a config (for YAML and JSON)."""
    return dataclasses.asdict(cfg)


def _is_config(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML or command-line value to the field's declared type, or raise."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key)
    if _is_config(tp):
        if dataclasses.is_dataclass(value):
            return value
        return from_dict(tp, value, prefix=f"{key}.")
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' takes a mapping, got {value!r}.")
        return dict(value)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' takes a list, got {value!r}.")
        return [_coerce(v, item_tp, key) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
            return False
        raise ConfigError(f"config key '{key}' takes true or false, got {value!r}.")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"config key '{key}' takes a number, got {value!r}.")
        try:
            number = float(value) if tp is float else int(value)
        except (TypeError, ValueError):
            kind = "a number" if tp is float else "a whole number"
            raise ConfigError(f"config key '{key}' takes {kind}, got {value!r}.") from None
        if tp is int and isinstance(value, float) and value != int(value):
            raise ConfigError(f"config key '{key}' takes a whole number, got {value!r}.")
        return number
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"config key '{key}' takes a string, got {value!r}.")
        return str(value)
    return value


def _field_types(cls: type) -> dict[str, Any]:
    """The config fields' types (class-level tables such as `RENAMED` are not fields)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "", root: type | None = None) -> T:
    """Build a config from a nested dict, rejecting unknown keys and mistyped values."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix or '<root>'}' must be a mapping.")
    root = root or cls
    types_ = _field_types(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in types_:
            _raise_renamed(root, dotted)
            known = ", ".join(sorted(types_))
            raise ConfigError(f"unknown config key '{dotted}'; known keys here: {known}.")
        tp = types_[key]
        if _is_config(tp):
            kwargs[key] = from_dict(tp, value or {}, prefix=f"{dotted}.", root=root)
        else:
            kwargs[key] = _coerce(value, tp, dotted)
    return cls(**kwargs)


def _raise_renamed(root: type, key: str) -> None:
    """An old key (a config class's `RENAMED` table) is an error that names its new key."""
    new = getattr(root, "RENAMED", {}).get(key)
    if new is not None:
        raise ConfigError(f"config key '{key}' is now '{new}'; rename it (the value is the same).")


def leaf_fields(cls: type, prefix: str = "") -> list[tuple[str, dataclasses.Field, Any]]:
    """Every non-section field as (dotted key, field, type), depth first."""
    out = []
    hints = _field_types(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if _is_config(tp):
            out.extend(leaf_fields(tp, prefix=f"{prefix}{f.name}."))
        else:
            out.append((f"{prefix}{f.name}", f, tp))
    return out


def set_dotted(cfg: Any, key: str, raw: Any) -> None:
    """Set one dotted key (`train.lr`) on a config, converting and checking the value."""
    parts = key.split(".")
    target = cfg
    for depth, part in enumerate(parts):
        hints = _field_types(type(target))
        if part not in hints:
            _raise_renamed(type(cfg), key)
            where = ".".join(parts[:depth]) or "<root>"
            known = ", ".join(sorted(hints))
            raise ConfigError(f"unknown config key '{key}'; keys under {where}: {known}.")
        if depth == len(parts) - 1:
            if _is_config(hints[part]):
                raise ConfigError(f"config key '{key}' is a section; set one of its fields.")
            setattr(target, part, _coerce(raw, hints[part], key))
        else:
            if not _is_config(hints[part]):
                raise ConfigError(f"config key '{'.'.join(parts[: depth + 1])}' has no fields.")
            target = getattr(target, part)


def apply_overrides(cfg: Any, overrides: list[str]) -> None:
    """Apply `key=value` strings (from `--set`) to a config."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value, e.g. train.lr=3e-5.")
        key, value = item.split("=", 1)
        import yaml

        set_dotted(cfg, key.strip(), yaml.safe_load(value) if value.strip() else "")


def load_yaml(cls: type[T], path: str | Path) -> T:
    """Read a config saved as YAML (unknown keys are an error)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; check the --config path.")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"config file {path} is not valid YAML ({exc}); fix its syntax."
        ) from None
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def dump_yaml(cfg: Any, path: str | Path) -> None:
    """Save the resolved config as YAML."""
    import yaml

    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
