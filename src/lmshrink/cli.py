"""The `lmshrink` command: parse arguments, call the public API, print.

Options are generated from the config dataclasses, so each setting is described once (in
`config.py` or beside its workflow) and every flag has a dotted-key twin for `--set`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmshrink import __version__
from lmshrink.config import (
    ConfigError,
    apply_overrides,
    leaf_fields,
    load_yaml,
    set_dotted,
)
from lmshrink.errors import Interrupted, LmshrinkError
from lmshrink.reporting.progress import result

# Destinations of the flags of renamed keys (a config class's `RENAMED` table); their entry in
# `dests` is the error message naming the new flag.
RENAMED = "renamed__"


def _add_config_options(parser: argparse.ArgumentParser, cls: type) -> dict[str, str]:
    """Add one option per config field, grouped by section, and a hidden one per renamed flag;
    returns {dest: dotted key, or for a renamed flag its error message}."""
    dests: dict[str, str] = {}
    groups: dict[str, Any] = {}
    for key, field, tp in leaf_fields(cls):
        if _yaml_only(tp):
            continue  # lists of sections (stages) and free mappings: --config or --set
        section = key.rsplit(".", 1)[0] if "." in key else ""
        if section not in groups:
            groups[section] = parser.add_argument_group(f"{section} options") if section else parser
        group = groups[section]
        name = field.metadata.get("flag", field.name).replace("_", "-")
        dest = key.replace(".", "__")
        if any(a.dest == dest or f"--{name}" in a.option_strings for a in parser._actions):
            raise AssertionError(f"two config fields would both be --{name} ({key})")
        # argparse expands %-formats in help; a literal "98%" must not be read as one
        help_text = field.metadata.get("help", "").replace("%", "%%")
        if field.metadata.get("positional"):
            # A list field takes one or more values (`lmshrink bench A B C`).
            many = {"nargs": "+"} if "list" in str(tp) else {}
            group.add_argument(dest, metavar=name.replace("-", "_").upper(), help=help_text, **many)
        elif tp is bool:
            group.add_argument(
                f"--{name}",
                dest=dest,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=f"{help_text} (default: {str(field.default).lower()})",
            )
        else:
            default = field.default
            shown = (
                f" (default: {default})" if default not in ("", None, dataclasses.MISSING) else ""
            )
            upper = name.replace("-", "_").upper()
            metavar = f"{upper}[,...]" if "list" in str(tp) else upper
            group.add_argument(
                f"--{name}",
                dest=dest,
                default=argparse.SUPPRESS,
                metavar=metavar,
                help=help_text + shown,
            )
        dests[dest] = key
    for old_key, new_key in getattr(cls, "RENAMED", {}).items():
        old_flag = "--" + old_key.rsplit(".", 1)[-1].replace("_", "-")
        new_flags = [
            a.option_strings for a in parser._actions if a.dest == new_key.replace(".", "__")
        ]
        if not new_flags or any(old_flag in a.option_strings for a in parser._actions):
            continue  # the flag still exists (its key moved between sections, e.g. train.seed)
        # A flag of an earlier version: accepted by the parser, refused by `_build_config`
        # with an error that names its new flag.
        dest = f"{RENAMED}{old_key}"
        parser.add_argument(old_flag, dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        dests[dest] = f"{old_flag} is now {new_flags[0][0]}; rename it (the value is the same)."
    return dests


def _yaml_only(tp: Any) -> bool:
    import typing

    args = typing.get_args(tp)
    return typing.get_origin(tp) is dict or bool(args and dataclasses.is_dataclass(args[0]))


def _build_config(cls: type, args: argparse.Namespace, dests: dict[str, str]) -> Any:
    cfg = load_yaml(cls, args.config) if args.config else cls()
    for dest, key in dests.items():
        if dest in vars(args):
            if dest.startswith(RENAMED):
                raise ConfigError(key)
            set_dotted(cfg, key, getattr(args, dest))
    apply_overrides(cfg, args.set or [])
    return cfg


def _cmd_finetune(cfg: Any) -> None:
    from lmshrink.finetune import finetune

    meta = finetune(cfg)
    scores = ", ".join(f"{k} {100 * v:.2f}" for k, v in meta["dev"].items())
    result(
        f"saved {cfg.out} (dev {scores}; best at epoch {meta['best_epoch']}, "
        f"{meta['train_seconds']:.0f} s)",
        cfg.out,
    )


def _cmd_evaluate(cfg: Any) -> None:
    from lmshrink.evaluate import evaluate, format_table

    print(format_table(evaluate(cfg)))
    if cfg.json:
        print(f"wrote {cfg.json}")


def _cmd_distill(cfg: Any) -> None:
    from lmshrink.distill import distill
    from lmshrink.reporting.run_report import markdown

    report = distill(cfg)
    if "model_dir" in report:  # only the main process saves the model and prints the report
        result(markdown(report), cfg.out)
        result(f"saved {cfg.out}/model, {cfg.out}/report.json and {cfg.out}/report.md", cfg.out)


def _cmd_export(cfg: Any) -> None:
    from lmshrink.export import export, format_summary

    summary = export(cfg)
    result(format_summary(summary), summary["out"])


def _cmd_quantize(cfg: Any) -> None:
    from lmshrink.quantize import format_table, quantize

    done = quantize(cfg)
    result(format_table(done), done["out"])
    result(f"saved {done['out']} (results in {done['out']}/quantize.json)", done["out"])


def _cmd_bench(cfg: Any) -> None:
    from lmshrink.bench import bench, format_table

    print(format_table(bench(cfg)))
    if cfg.json:
        print(f"wrote {cfg.json}")


def _cmd_report(cfg: Any) -> None:
    from lmshrink.report import format_summary, report

    print(format_summary(report(cfg)))


def _cmd_prune(cfg: Any) -> None:
    from lmshrink.prune import REPORT_FILE, prune

    report = prune(cfg)
    speed = ", ".join(f"{v:.2f}x at batch {k}" for k, v in report["speedup"].items())
    result(
        f"saved {cfg.out} ({report['encoder_parameters']['pruned']} of "
        f"{report['encoder_parameters']['unpruned']} encoder parameters kept, sparsity "
        f"{100 * report['encoder_sparsity']:.1f}%; speed {speed}; dev score "
        f"{100 * report['score']['pruned']:.2f} vs {100 * report['score']['unpruned']:.2f}); "
        f"report in {cfg.out}/{REPORT_FILE}",
        cfg.out,
    )


def _cmd_shrink(cfg: Any) -> None:
    from lmshrink.shrink import format_summary, shrink

    result(format_summary(shrink(cfg)), cfg.out)


def _commands() -> dict[str, tuple[type, Callable[[Any], None], str]]:
    from lmshrink.bench import BenchConfig
    from lmshrink.distill import DistillConfig
    from lmshrink.evaluate import EvaluateConfig
    from lmshrink.export import ExportConfig
    from lmshrink.finetune import FinetuneConfig
    from lmshrink.prune import PruneConfig
    from lmshrink.quantize import QuantizeConfig
    from lmshrink.report import ReportConfig
    from lmshrink.shrink import ShrinkConfig

    return {
        "shrink": (
            ShrinkConfig,
            _cmd_shrink,
            "the most accurate model within a latency budget on this CPU (searches students)",
        ),
        "finetune": (
            FinetuneConfig,
            _cmd_finetune,
            "fine-tune an encoder on a task (the teacher to compress)",
        ),
        "distill": (
            DistillConfig,
            _cmd_distill,
            "distill a teacher into a small student with unlabeled transfer data",
        ),
        "evaluate": (
            EvaluateConfig,
            _cmd_evaluate,
            "score a model on a task split; parameters and size on disk",
        ),
        "export": (
            ExportConfig,
            _cmd_export,
            "export a model to ONNX, checked against PyTorch on the dev set",
        ),
        "quantize": (
            QuantizeConfig,
            _cmd_quantize,
            "dynamic int8 with PyTorch and ONNX Runtime; dev score and speed of each",
        ),
        "prune": (
            PruneConfig,
            _cmd_prune,
            "remove attention heads and FFN neurons, recovering by distillation",
        ),
        "bench": (
            BenchConfig,
            _cmd_bench,
            "time and score models side by side (latency, throughput, size; ratios)",
        ),
        "report": (
            ReportConfig,
            _cmd_report,
            "gather runs into one table, a Pareto plot and a model card per model",
        ),
    }


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, dict[str, str]]]:
    parser = argparse.ArgumentParser(
        prog="lmshrink",
        description="Compress fine-tuned transformer classifiers into small, fast models.",
        epilog="Run 'lmshrink COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"lmshrink {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    dests: dict[str, dict[str, str]] = {}
    for name, (cls, _, help_text) in _commands().items():
        p = sub.add_parser(
            name,
            help=help_text,
            description=help_text[0].upper()
            + help_text[1:]
            + ". "
            + (cls.__doc__ or "").strip().split("\n")[0],
        )
        p.add_argument(
            "--config",
            metavar="YAML",
            help="read settings from a YAML file "
            "(flags given on the command line take precedence).",
        )
        p.add_argument(
            "--set",
            action="append",
            metavar="KEY=VALUE",
            help="override any config key, e.g. --set train.lr=3e-5 (repeatable).",
        )
        dests[name] = _add_config_options(p, cls)
    return parser, dests


def main(argv: list[str] | None = None) -> int:
    parser, dests = build_parser()
    args = parser.parse_args(argv)
    cls, run, _ = _commands()[args.command]
    from lmshrink.config import OutputSettings
    from lmshrink.runs import DISK_ERRORS, cannot_write, out_lock

    try:
        cfg = _build_config(cls, args, dests[args.command])
        # every command that writes --out holds its lock: two runs never share a folder
        with out_lock(cfg.out if isinstance(cfg, OutputSettings) else ""):
            run(cfg)
    except Interrupted as exc:  # SIGTERM or Ctrl-C in training: a checkpoint was written
        print(exc, file=sys.stderr)
        return exc.exit_code
    except (LmshrinkError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a disk full or read-only past the output folder's own checks
        if exc.errno not in DISK_ERRORS or not exc.filename:
            raise
        print(f"error: {cannot_write(Path(exc.filename), exc, output=False)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; nothing half-written was left in --out.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
