"""`lmshrink quantize`: dynamic int8 with PyTorch and with ONNX Runtime, measured on this CPU.

Four variants are scored on dev and timed in one process, interleaved
(`measure.speed.measure_speed`):

- `torch-fp32`: the given model, the reference;
- `torch-int8`: PyTorch's dynamic int8 (`compress.int8.quantize_torch`);
- `onnx-fp32`: the model exported as `lmshrink export` does (parity-checked);
- `onnx-int8`: ONNX Runtime's dynamic int8 of that export (`compress.int8.quantize_onnx`).

A token model (NER) is scored by entity F1; its agreement with fp32 is the share of words
given the same tag (read at each word's first sub-token), and its speed counts sentences.

The best backend is the fastest at the first timed batch size (1: serving latency) among those
whose dev score is at most `--max-drop` below the reference's; it may well be fp32, and then
the result says so with the CPU's int8-relevant instruction-set flags. Why `torch-int8/` holds
fp32 weights, and how `load_quantized` rebuilds the int8 model: `lmshrink.compress.int8`.

Output folder (`--out`):
  quantize.json   scores, speed, sizes, agreement with fp32, CPU flags, best backend, verdict
  torch-int8/     fp32 model folder + quantization.json (load with `load_quantized`)
  onnx-fp32/      model.onnx + tokenizer + export.json (as `lmshrink export` writes)
  onnx-int8/      model.onnx (int8) + tokenizer + export.json
  lmshrink.log    what the command printed (info and progress lines, warnings, the result)
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from lmshrink.compress.int8 import (
    BACKENDS,
    REFERENCE,
    RESULT_FILE,
    Outputs,
    agreement,
    choose_best,
    load_quantized,  # noqa: F401  (public here: README and model cards load int8 models with it)
    max_abs_diff,
    onnx_int8_folder,
    quantize_torch,
    save_torch_int8,
    serialized_bytes,
    verdict,
)
from lmshrink.compress.onnx import (
    MODEL_FILE,
    OnnxClassifier,
    OnnxSettings,
    check_settings,
    export_folder,
    require_onnx,
    write_json,
)
from lmshrink.config import (
    BatchSpeedSettings,
    DataConfig,
    EvalSettings,
    RunSettings,
    option,
)
from lmshrink.errors import ConfigError
from lmshrink.measure import metrics
from lmshrink.measure.scoring import predict_and_score
from lmshrink.models.loading import count_parameters, size_on_disk
from lmshrink.models.sources import read_model
from lmshrink.reporting.progress import LOG_FILE, for_command, log_to
from lmshrink.reporting.text import aligned, human_size
from lmshrink.runs import apply_threads, staged_output


@dataclasses.dataclass
class QuantizeConfig(BatchSpeedSettings, EvalSettings, RunSettings):
    """`lmshrink quantize`: dynamic int8 with PyTorch and ONNX Runtime, scored and timed.
    `--out` receives torch-int8/, onnx-fp32/, onnx-int8/ and quantize.json."""

    # Keys of earlier versions, and where their setting lives now.
    RENAMED: typing.ClassVar[dict[str, str]] = {"batch_size": "eval_batch_size"}

    model: str = option(
        "", "model folder (or run folder holding model/) to quantize.", positional=True
    )
    backends: list[str] = option(list(BACKENDS), "int8 backends to build: torch, onnx.")
    max_drop: float = option(
        0.005,
        "a backend can be best only if its dev score is at most this much below fp32 "
        "PyTorch's (0.005: half a point).",
    )
    onnx: OnnxSettings = dataclasses.field(default_factory=OnnxSettings)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)

    def check(self) -> None:
        """Refuse settings that cannot work, before any model is loaded."""
        unknown = sorted(set(self.backends) - set(BACKENDS))
        if unknown or not self.backends:
            raise ConfigError(
                f"--backends {','.join(self.backends)}: use one or both of {', '.join(BACKENDS)}."
            )
        if not self.speed_batch_sizes or min(self.speed_batch_sizes) < 1:
            raise ConfigError(
                "--speed-batch-sizes must list batch sizes of at least 1, got "
                f"{self.speed_batch_sizes}."
            )
        if self.speed_examples < 1 or self.rounds < 1 or self.eval_batch_size < 1:
            raise ConfigError(
                "--speed-examples, --rounds and --eval-batch-size must be at least 1."
            )
        if not self.max_drop >= 0:
            raise ConfigError(f"--max-drop must be 0 or more, got {self.max_drop}.")
        if "onnx" in self.backends:
            check_settings(self.onnx)
            require_onnx()


@for_command
def quantize(cfg: QuantizeConfig) -> dict[str, Any]:
    """Build the int8 variants of a model, score each on dev, time them interleaved, and
    say which is best on this CPU; writes everything to `cfg.out` (see the module doc)."""
    import torch

    from lmshrink.measure.machine import cpu_model, int8_flags
    from lmshrink.measure.speed import measure_speed

    cfg.check()
    apply_threads(cfg.threads)
    src = read_model(cfg.model, cfg.data, cfg.seed, out=cfg.out, overwrite=cfg.overwrite)
    assert src.out is not None
    task, model = src.task, src.model

    with staged_output(src.out) as stage:
        log_to(stage / LOG_FILE)
        variants: dict[str, Any] = {REFERENCE: model}
        sizes = {REFERENCE: size_on_disk(src.folder)}
        if "torch" in cfg.backends:
            save_torch_int8(
                src.folder, model, src.tokenizer, stage / "torch-int8", task.kind.auto_model
            )
            variants["torch-int8"] = quantize_torch(model)
            sizes["torch-int8"] = serialized_bytes(variants["torch-int8"])
        export_meta = None
        if "onnx" in cfg.backends:
            export_meta = export_folder(src, stage / "onnx-fp32", cfg.onnx, progress=True)
            onnx_int8_folder(stage / "onnx-fp32", stage / "onnx-int8")
            for name in ("onnx-fp32", "onnx-int8"):
                variants[name] = OnnxClassifier.from_folder(stage / name)
                sizes[name] = (stage / name / MODEL_FILE).stat().st_size

        backends: dict[str, dict[str, Any]] = {}
        reference: Outputs | None = None
        for name, variant in variants.items():
            scores, outputs = predict_and_score(
                variant,
                src.tokenizer,
                task,
                src.splits,
                src.data.max_length,
                cfg.eval_batch_size,
                progress=True,
            )
            reference = outputs[0] if reference is None else reference
            backends[name] = {
                "metrics": scores,
                "score": metrics.task_score(scores),
                "agreement_with_fp32": agreement(reference, outputs[0], task.kind),
                "max_abs_diff_to_fp32": max_abs_diff(reference, outputs[0]),
                "size_bytes": sizes[name],
            }
        speed = measure_speed(
            {name: (variant, src.enc) for name, variant in variants.items()},
            batch_sizes=tuple(cfg.speed_batch_sizes),
            limit={bs: cfg.speed_examples for bs in cfg.speed_batch_sizes},
            rounds=cfg.rounds,
        )
        result: dict[str, Any] = {
            "model": str(src.folder),
            "task": task.name,
            "split": "dev",
            "examples": sum(len(s) for s in src.splits),
            "files": [s.source for s in src.splits],
            "parameters": count_parameters(model),
            "backends": backends,
            "speed": speed,
            "threads": torch.get_num_threads(),
            "cpu": {
                "model": cpu_model(),
                "int8_flags": int8_flags(),
                "torch_quantized_engine": torch.backends.quantized.engine,
            },
            "parity": export_meta["parity"] if export_meta else None,
            **_token_notes(task, src.splits),
            "max_drop": cfg.max_drop,
            "size_note": "size_bytes: weight files on disk; for torch-int8, its int8 state "
            "serialized in memory (its folder stores the fp32 weights, see load_quantized)",
        }
        result["best"] = choose_best(result, cfg.max_drop)
        result["verdict"] = verdict(result, cfg.max_drop)
        write_json(stage / RESULT_FILE, result)
    return {**result, "out": str(src.out)}


def _token_notes(task: Any, splits: list[Any]) -> dict[str, Any]:
    """What a token task's numbers mean (nothing for sentence tasks): the score is entity F1,
    agreement is per word, and speed counts sentences."""
    if not task.kind.token_level:
        return {}
    return {
        "words": sum(s.num_words for s in splits),
        "agreement_unit": "word (the tag at each word's first sub-token)",
        "speed_unit": "sentences",
    }


def format_table(result: dict[str, Any]) -> str:
    """The quantize result as an aligned plain-text table and the verdict."""
    sizes = [str(bs) for bs in result["speed"]["batch_sizes"]]
    token = "words" in result  # a token task: entity F1, agreement per word, sentences/s
    score, agree = (
        ("dev entity F1", "words agree w/ fp32") if token else ("dev score", "agree w/ fp32")
    )
    unit = "sent/s" if token else "ex/s"
    header = ["backend", score, agree, *[f"{unit} b={bs}" for bs in sizes], "size"]
    rows = [header]
    for name, b in result["backends"].items():
        speed = [
            f"{result['speed']['per_second'][name][bs]:.0f} "
            f"({result['speed']['ratio'][name][bs]:.2f}x)"
            for bs in sizes
        ]
        score, agree = f"{100 * b['score']:.2f}", f"{100 * b['agreement_with_fp32']:.2f}%"
        rows.append([name, score, agree, *speed, human_size(b["size_bytes"])])
    lines = aligned(rows)
    flags = ", ".join(n for n, has in result["cpu"]["int8_flags"].items() if has) or "none"
    files = ", ".join(result.get("files", []))
    count = (
        f"{result['examples']} sentences, {result['words']:,} words"
        if token
        else f"{result['examples']} examples"
    )
    lines.append(
        f"scored on {result['task']} {result['split']}, {count}" + (f" ({files})" if files else "")
    )
    lines.append(
        f"cpu: {result['cpu']['model']} ({result['threads']} threads; int8 flags: {flags})"
    )
    lines.append(result["verdict"])
    return "\n".join(lines)
