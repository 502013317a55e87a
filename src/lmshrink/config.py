"""Typed configs: dataclasses with one description per field, saved as YAML.

A config value comes, in increasing priority, from the dataclass default, a YAML file
(`--config run.yaml`), a command-line flag generated from the field (`--lr 3e-5`), and a
dotted-key override (`--set train.lr=3e-5`). Every key is checked against the fields, so
a typo is an error instead of a silently ignored setting.
"""

from __future__ import annotations

import codecs
import copy
import dataclasses
import functools
import math
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
    """Which task and data to use (GLUE or NER folder, hub, or custom files)."""

    task: str = option(
        "",
        "GLUE task name (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli), an NER task "
        "(conll2003, or wikiann with --languages), 'custom' (sentences) or 'custom-ner' "
        "(tagged words) with --train-file/--dev-file.",
    )
    data_dir: str = option(
        "",
        "GLUE glue_data folder (holding SST-2/, CoLA/, ...) or NER folder (holding "
        "conll2003/, wikiann/); empty: load GLUE from the dataset hub.",
    )
    train_file: str = option(
        "",
        "custom task: training file (.csv, .tsv or .jsonl); custom-ner: a CoNLL column file "
        "(word ... tag per line, blank line between sentences) or .jsonl with tokens/tags.",
    )
    dev_file: str = option("", "custom task: dev file (same formats as --train-file).")
    test_file: str = option("", "custom task: test file (same formats), optional.")
    text_columns: list[str] = option(
        [], "custom task: one or two text column names (indices with --no-header)."
    )
    label_column: str = option("label", "custom task: label column name.")
    header: bool = option(
        True,
        "custom task: CSV/TSV files start with a header row naming the columns; with "
        "--no-header, --text-columns and --label-column are column indices counted from 0 "
        "(e.g. --text-columns 0 --label-column 1).",
    )
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
    languages: list[str] = option(
        [],
        "wikiann: languages mixed in one task (e.g. en,de,fr); each sentence keeps its "
        "language, so scores are reported per language and averaged.",
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
    """How a command that runs models runs: seed, progress and messages, CPU threads
    (`evaluate` and `bench`, which write no output folder, take only this block)."""

    # NumPy takes seeds from 0 to 2**32 - 1; another value would fail deep in a run.
    seed: int = option(
        42, "random seed (initialisation, data order, subsets).", min=0, max=2**32 - 1
    )
    progress: bool = option(
        True,
        "progress bars on a terminal; --no-progress, or output to a file or pipe: a plain "
        "line per long step at its start, every 30 s and at its end instead.",
    )
    quiet: bool = option(
        False,
        "print only the result, warnings and errors: no progress and no info lines (the run "
        "folder's lmshrink.log still gets them).",
    )
    threads: int = option(0, "CPU threads for PyTorch (0: its default).", min=0)


@dataclasses.dataclass
class RunSettings(ProcessSettings, OutputSettings):
    """What every command that writes an output folder takes (inherited, so these keys sit at
    the top level of each command's config: `out`, `seed`, ...), in this order: out,
    overwrite, seed, progress, quiet, threads."""


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
        kind = "a number" if tp is float else "a whole number"
        if isinstance(value, bool):
            raise ConfigError(f"config key '{key}' takes a number, got {value!r}.")
        try:
            number = float(value) if tp is float else int(value)
        except (TypeError, ValueError, OverflowError):  # int(1e400) overflows
            raise ConfigError(f"config key '{key}' takes {kind}, got {_short(value)}.") from None
        if tp is int and isinstance(value, float) and value != int(value):
            raise ConfigError(f"config key '{key}' takes a whole number, got {value!r}.")
        if tp is float and not math.isfinite(number):
            # No setting means anything with NaN or infinity; it would surface as a NaN loss.
            raise ConfigError(f"config key '{key}' takes a finite number, got {value!r}.")
        return number
    if tp is str:
        if value is None:
            raise ConfigError(
                f"config key '{key}' has no value; give it one (\"\" for empty) or remove it."
            )
        if isinstance(value, bool):
            # YAML reads an unquoted yes/no/on/off/true/false as a boolean.
            raise ConfigError(
                f"config key '{key}' takes text, got the boolean {value!r} (YAML reads an "
                "unquoted yes, no, on, off, true or false so); quote it, e.g. 'yes'."
            )
        if isinstance(value, (dict, list)):
            raise ConfigError(f"config key '{key}' takes a string, got {_short(value)}.")
        return str(value)
    return value


def _short(value: Any, limit: int = 80) -> str:
    """`repr(value)` cut to `limit` characters, for quoting a user's value in a message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"


def _field_types(cls: type) -> dict[str, Any]:
    """The config fields' types (class-level tables such as `RENAMED` are not fields)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "", root: type | None = None) -> T:
    """Build a config from a nested dict, rejecting unknown keys and mistyped values."""
    if not isinstance(data, dict):
        where = f"section '{prefix.rstrip('.')}'" if prefix else "file"
        raise ConfigError(
            f"config {where} must be a mapping of key: value lines, got "
            f"{type(data).__name__} {_short(data, 40)}."
        )
    root = root or cls
    types_ = _field_types(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if not isinstance(key, str) or key not in types_:
            _raise_renamed(root, dotted)
            known = ", ".join(sorted(types_))
            raise ConfigError(f"unknown config key '{dotted}'; known keys here: {known}.")
        tp = types_[key]
        if _is_config(tp):
            # An empty section (`data:`) keeps its defaults.
            section = {} if value is None else value
            kwargs[key] = from_dict(tp, section, prefix=f"{dotted}.", root=root)
        else:
            kwargs[key] = _in_bounds(cls, key, _coerce(value, tp, dotted), dotted)
    return cls(**kwargs)


def _in_bounds(cls: type, name: str, value: Any, key: str) -> Any:
    """`value`, checked against the `min`/`max` a field declares (`option(..., min=0)`)."""
    meta = next(f.metadata for f in dataclasses.fields(cls) if f.name == name)
    low, high = meta.get("min"), meta.get("max")
    if isinstance(value, (int, float)) and (
        (low is not None and value < low) or (high is not None and value > high)
    ):
        span = f"from {low} to {high}" if high is not None else f"of {low} or more"
        raise ConfigError(f"config key '{key}' takes a value {span}, got {value!r}.")
    return value


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
            value = _coerce(raw, hints[part], key)
            setattr(target, part, _in_bounds(type(target), part, value, key))
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
        key = key.strip()
        set_dotted(cfg, key, _override_value(cfg, key, value))


def _override_value(cfg: Any, key: str, value: str) -> Any:
    """The value of `--set key=value`: text as typed for a text setting (YAML would turn
    `yes` into a boolean), else the YAML scalar or list it spells."""
    import yaml

    if not value.strip():
        return ""
    tp = _key_type(type(cfg), key)
    text = value.lstrip()
    if tp is str and text[:1] not in ("'", '"'):
        return value
    if tp == list[str] and text[:1] not in ("[", "'", '"'):
        return value  # comma-separated, split by _coerce
    try:
        return yaml.safe_load(value)
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(
            f"--set {key}: the value {_short(value)} is not valid YAML ({problem}); "
            f"quote it, e.g. --set '{key}=\"...\"'."
        ) from None


def _key_type(cls: type, key: str) -> Any:
    """The declared type of a dotted key (Optional unwrapped), or None if it is unknown."""
    tp: Any = cls
    for part in key.split("."):
        if not _is_config(tp):
            return None
        tp = _field_types(tp).get(part)
        if tp is None:
            return None
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = args[0] if len(args) == 1 else tp
    return tp


# A config file is a few kilobytes; anything far larger is another file passed by mistake.
_MAX_CONFIG_BYTES = 10 * 2**20


@functools.cache
def _yaml_loader() -> Any:
    """A safe YAML loader that refuses a key given twice in one mapping, which YAML would
    resolve silently to the last value (made on first use: yaml is imported lazily)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[tuple[str, str]] = set()
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                    continue  # merge keys (<<) may override, as YAML intends
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"key '{key_node.value}' is given twice in one mapping; keep one",
                        key_node.start_mark,
                    )
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def _read_config_text(path: Path) -> str:
    """The text of a config file: UTF-8 (or UTF-16/32 with a byte-order mark), else an
    error naming the line and byte."""
    try:
        size = path.stat().st_size
        if size > _MAX_CONFIG_BYTES:
            raise ConfigError(
                f"config file {path} is {size / 2**20:.0f} MiB, far too large for a YAML "
                "config; check the --config path."
            )
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"config file {path} cannot be read ({exc.strerror}); check the --config path."
        ) from None
    encoding = "utf-8-sig"
    for bom, name in (
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            encoding = name
            break
    if encoding == "utf-8-sig" and b"\x00" in data:  # before decoding: binary, not "not UTF-8"
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise ConfigError(
            f"config file {path} holds a NUL byte at line {line}, so it is not a text file; "
            "check the --config path."
        )
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"config file {path} is not valid UTF-8 text at line {line}, byte {exc.start} "
            f"(0x{data[exc.start]:02X}); save it as UTF-8."
        ) from None
    return text


def load_yaml(cls: type[T], path: str | Path) -> T:
    """Read a config saved as YAML (unknown keys are an error)."""
    import yaml

    path = Path(path)
    try:
        is_dir, is_file = path.is_dir(), path.is_file()
    except (OSError, ValueError) as exc:  # a name too long for the file system, say
        raise ConfigError(
            f"config file {_short(str(path))} is not a usable path "
            f"({getattr(exc, 'strerror', None) or exc}); check the --config path."
        ) from None
    if is_dir:
        raise ConfigError(
            f"config file {path} is a folder, not a file; pass the YAML file to --config "
            "(a run folder keeps it as config.yaml)."
        )
    if not is_file:
        raise ConfigError(f"config file {path} does not exist; check the --config path.")
    text = _read_config_text(path)
    try:
        data = yaml.load(text, Loader=_yaml_loader())
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        # One line: where and what (YAML's own message spans several lines).
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(
            f"config file {path} is not valid YAML{where} ({problem}); fix its syntax."
        ) from None
    if data is None:
        data = {}  # an empty file: all defaults
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def dump_yaml(cfg: Any, path: str | Path) -> None:
    """Save the resolved config as YAML."""
    import yaml

    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
