"""`lmshrink quantize`: int8 with PyTorch and with ONNX Runtime, measured on this CPU.

Up to five variants are scored on dev and timed in one process, interleaved
(`measure.speed.measure_speed`):

- `torch-fp32`: the given model, the reference;
- `torch-int8`: PyTorch's dynamic int8 (`compress.int8.quantize_torch`);
- `onnx-fp32`: the model exported as `lmshrink export` does (parity-checked);
- `onnx-int8`: ONNX Runtime's dynamic int8 of that export (`compress.int8.quantize_onnx`);
- `onnx-int8-static`: ONNX Runtime's static int8 of that export, its activation scales
  calibrated on `--calibration-examples` training examples
  (`compress.int8.quantize_onnx_static`); built by default beside `onnx-int8`
  (`--int8-modes dynamic,static`), skipped with a warning when the task has no training
  examples.

Dynamic int8 computes activation scales per call over the whole batch, so a sentence's
prediction can change with the sentences batched with it; static int8 fixes them, so it
cannot. Each ONNX int8 variant's entry says how much (`batch_invariance`: the share of dev
predictions at batch size 1 that differ from those inside batches of 32 in dev order, and the
largest |logit difference|).

A token model (NER) is scored by entity F1; its agreement with fp32 is the share of words
given the same tag (read at each word's first sub-token), and its speed counts sentences.

The best backend is the fastest at the first timed batch size (1: serving latency) among those
whose dev score is at most `--max-drop` below the reference's, except that a batch-invariant
backend (fp32, static int8) is preferred to a dynamic int8 one at most `--invariant-slack`
faster (default 15%: on SST-2 here static int8 costs transformers 12-13% of batch-1 latency
and no accuracy, and the BiLSTM 1.9x, bench/results/deploy.md). It may well be fp32, and then
the result says so with the CPU's int8-relevant instruction-set flags. Why `torch-int8/` holds
fp32 weights, and how `load_quantized` rebuilds the int8 model: `lmshrink.compress.int8`.

Output folder (`--out`):
  quantize.json   scores, speed, sizes, agreement with fp32, CPU flags, best backend, verdict
  torch-int8/     fp32 model folder + quantization.json (load with `load_quantized`)
  onnx-fp32/      model.onnx + tokenizer + export.json (as `lmshrink export` writes)
  onnx-int8/      model.onnx (dynamic int8) + tokenizer + export.json
  onnx-int8-static/  model.onnx (static int8) + tokenizer + export.json (with the calibration)
  lmshrink.log    what the command printed (info and progress lines, warnings, the result)

While it runs, quantize works in `OUT.work/` beside `--out`: `config.yaml`, each variant folder
(built in a staging folder and renamed into place when whole), `scores.json` (each variant's
dev entry, saved atomically as soon as it is computed) and `reference.npz` (fp32's dev
outputs, which the others' agreement is measured against). A killed run continues with
`--resume` and the same settings: finished variants and scores are kept, the rest is redone,
then every variant is timed again (timing is never resumed: speed ratios are measured in one
run). `--out` appears only when all is done, and the work folder goes. A kill, Ctrl-C or a
full disk keeps the work folder; an error in the input (a failed parity check, say) removes
it, since a resume with the same settings would meet it again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lmshrink.compress.int8 import (
    BACKENDS,
    CALIBRATION_EXAMPLES,
    INT8_MODES,
    ONNX_INT8_FOLDERS,
    REFERENCE,
    RESULT_FILE,
    Outputs,
    agreement,
    batch_invariance,
    calibration_set,
    check_calibration_split,
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
    EXPORT_FILE,
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
from lmshrink.errors import ConfigError, Interrupted, LmshrinkError
from lmshrink.measure import metrics
from lmshrink.measure.scoring import predict_and_score
from lmshrink.models.loading import count_parameters, size_on_disk
from lmshrink.models.sources import read_model
from lmshrink.reporting.progress import LOG_FILE, for_command, info, log_to, warn
from lmshrink.reporting.text import aligned, human_size
from lmshrink.runs import (
    DISK_ERRORS,
    apply_threads,
    cannot_write,
    staged_output,
    write_text_atomic,
)
from lmshrink.training.checkpoint import end_work, save_work_config, start_work

VARIANT_FOLDERS = ("torch-int8", "onnx-fp32", *ONNX_INT8_FOLDERS.values())
SCORES_FILE = "scores.json"  # in the work folder: each variant's dev entry, as computed
REFERENCE_OUTPUTS = "reference.npz"  # in the work folder: fp32's outputs on the first dev split


@dataclasses.dataclass
class QuantizeConfig(BatchSpeedSettings, EvalSettings, RunSettings):
    """`lmshrink quantize`: int8 with PyTorch and ONNX Runtime, scored and timed. `--out`
    receives torch-int8/, onnx-fp32/, onnx-int8/ (onnx-int8-static/) and quantize.json."""

    # Keys of earlier versions, and where their setting lives now.
    RENAMED: typing.ClassVar[dict[str, str]] = {"batch_size": "eval_batch_size"}

    model: str = option(
        "", "model folder (or run folder holding model/) to quantize.", positional=True
    )
    backends: list[str] = option(list(BACKENDS), "int8 backends to build: torch, onnx.")
    int8_modes: list[str] = option(
        ["dynamic", "static"],
        "ONNX Runtime int8 modes to build: dynamic (onnx-int8/: activation scales computed at "
        "each call over the whole batch, so a prediction can change with its batch), static "
        "(onnx-int8-static/: scales calibrated once on training examples, so a prediction is "
        "the same alone or in any batch; skipped with a warning when the task has no "
        "training examples and dynamic is built too).",
    )
    invariant_slack: float = option(
        0.15,
        "the best backend is batch-invariant (fp32 or static int8) rather than a dynamic int8 "
        "one that is at most this much faster (0.15: 15% more examples per second; 0: always "
        "the fastest).",
    )
    calibration_examples: int = option(
        CALIBRATION_EXAMPLES,
        "training examples (a fixed-seed random subset; never dev) whose activations set "
        "static int8's scales.",
    )
    max_drop: float = option(
        0.005,
        "a backend can be best only if its dev score is at most this much below fp32 "
        "PyTorch's (0.005: half a point).",
    )
    resume: bool = option(
        False,
        "continue a killed run with the same settings: keep the variants and dev scores it "
        "finished (in OUT.work/), redo the rest, then time every variant again.",
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
        if not self.invariant_slack >= 0:
            raise ConfigError(f"--invariant-slack must be 0 or more, got {self.invariant_slack}.")
        modes = ",".join(self.int8_modes)
        if not self.int8_modes or not set(self.int8_modes) <= set(INT8_MODES):
            raise ConfigError(f"--int8-modes {modes}: use one or both of {', '.join(INT8_MODES)}.")
        # (the default dynamic,static says nothing when no ONNX variant is built)
        if self.int8_modes == ["static"] and "onnx" not in self.backends:
            raise ConfigError(
                f"--int8-modes {modes}: static int8 is ONNX Runtime's; add onnx to --backends."
            )
        if self.calibration_examples < 1:
            raise ConfigError(
                f"--calibration-examples must be at least 1, got {self.calibration_examples}."
            )
        if "onnx" in self.backends:
            check_settings(self.onnx)
            require_onnx()


@for_command
def quantize(cfg: QuantizeConfig) -> dict[str, Any]:
    """Build the int8 variants of a model, score each on dev, time them interleaved, and
    say which is best on this CPU; writes everything to `cfg.out` (see the module doc).
    `cfg.resume` continues a killed run from its work folder."""
    import torch

    from lmshrink.measure.machine import cpu_model, int8_flags
    from lmshrink.measure.speed import measure_speed

    cfg.check()
    apply_threads(cfg.threads)
    work, _ = start_work(cfg, QuantizeConfig)  # --out, and the unfinished run beside it
    out = Path(cfg.out).expanduser()
    src = read_model(cfg.model, cfg.data, cfg.seed)
    task, model = src.task, src.model
    if "static" in cfg.int8_modes and "onnx" in cfg.backends and "train" not in task.splits:
        if cfg.int8_modes == ["static"]:
            check_calibration_split(task)  # the error, before anything slow
        warn(
            f"task {task.name} has no training examples to calibrate static int8 on: "
            "building dynamic int8 only; pass --train-file for onnx-int8-static/."
        )
        cfg = dataclasses.replace(cfg, int8_modes=["dynamic"])
    if cfg.resume:
        kept = [n for n in VARIANT_FOLDERS if (work / n).is_dir()]
        info(f"resuming {work}: keeping {', '.join(kept) or 'no variant folder'}")
    save_work_config(cfg, work)
    log_to(work / LOG_FILE)  # goes into --out with the results
    try:
        variants, sizes, built = _build_variants(cfg, src, work)
        backends = _score_variants(cfg, src, variants, sizes, work, built)
        speed = measure_speed(  # never resumed: the ratios are measured in one run
            {name: (variant, src.enc) for name, variant in variants.items()},
            batch_sizes=tuple(cfg.speed_batch_sizes),
            limit={bs: cfg.speed_examples for bs in cfg.speed_batch_sizes},
            rounds=cfg.rounds,
        )
    except BaseException as error:
        # An error in the user's input would come back on --resume (same settings): no keep.
        wrong_input = isinstance(error, LmshrinkError) and not isinstance(error, Interrupted)
        end_work(work, error, resumable=_resumable(work) and not wrong_input)
        if isinstance(error, OSError) and error.errno in DISK_ERRORS:
            raise cannot_write(work, error, output=False) from None
        raise
    export = work / "onnx-fp32" / EXPORT_FILE
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
        "parity": json.loads(export.read_text())["parity"] if "onnx" in cfg.backends else None,
        **_token_notes(task, src.splits),
        "max_drop": cfg.max_drop,
        "size_note": "size_bytes: weight files on disk; for torch-int8, its int8 state "
        "serialized in memory (its folder stores the fp32 weights, see load_quantized)",
    }
    result["invariant_slack"] = cfg.invariant_slack
    result["best"] = choose_best(result, cfg.max_drop, cfg.invariant_slack)
    result["verdict"] = verdict(result, cfg.max_drop)
    with staged_output(out) as stage:
        # linked, not moved: until --out is in place, the work folder keeps all it holds
        for name in [*VARIANT_FOLDERS, LOG_FILE]:
            _link(work / name, stage / name)
        write_json(stage / RESULT_FILE, result)
    end_work(work)
    return {**result, "out": str(out)}


def _build_variants(
    cfg: QuantizeConfig, src: Any, work: Path
) -> tuple[dict[str, Any], dict[str, int], set[str]]:
    """(the models to score and time by name, their sizes, the names of the variant folders
    built by this run); each folder is built in `work` (`_variant_folder`), or kept there
    from the run being resumed."""
    model = src.model
    variants: dict[str, Any] = {REFERENCE: model}
    sizes = {REFERENCE: size_on_disk(src.folder)}
    built: set[str] = set()
    if "torch" in cfg.backends:
        auto = src.task.kind.auto_model
        _variant_folder(
            work,
            "torch-int8",
            built,
            lambda f: save_torch_int8(src.folder, model, src.tokenizer, f, auto),
        )
        variants["torch-int8"] = quantize_torch(model)  # deterministic: its folder's model
        sizes["torch-int8"] = serialized_bytes(variants["torch-int8"])
    if "onnx" in cfg.backends:
        fp32 = work / "onnx-fp32"
        _variant_folder(
            work, "onnx-fp32", built, lambda f: export_folder(src, f, cfg.onnx, progress=True)
        )
        names = ["onnx-fp32"]
        for mode in [m for m in INT8_MODES if m in cfg.int8_modes]:
            name = ONNX_INT8_FOLDERS[mode]
            if "onnx-fp32" in built:  # the int8 graphs are made from that export: again too
                shutil.rmtree(work / name, ignore_errors=True)

            def build(folder: Path, mode: str = mode) -> None:
                calibration = None
                if mode == "static":
                    calibration = calibration_set(src, cfg.calibration_examples, cfg.seed)
                    info(
                        f"calibrating static int8 on {len(calibration.split)} training "
                        f"examples of {calibration.split.source}"
                    )
                onnx_int8_folder(fp32, folder, mode, calibration)

            _variant_folder(work, name, built, build)
            names.append(name)
        for name in names:
            variants[name] = OnnxClassifier.from_folder(work / name)
            sizes[name] = (work / name / MODEL_FILE).stat().st_size
    return variants, sizes, built


def _variant_folder(work: Path, name: str, built: set[str], build: Callable[[Path], Any]) -> None:
    """Make `work/name` with `build(folder)` in a staging folder renamed into place when
    whole, so that a kill leaves the finished folder or none; one an earlier run finished is
    kept. Adds `name` to `built` when it is made now."""
    folder = work / name
    if folder.is_dir():
        return
    partial = work / f".{name}.partial"
    shutil.rmtree(partial, ignore_errors=True)  # what a killed build left
    build(partial)
    os.replace(partial, folder)
    built.add(name)


def _score_variants(
    cfg: QuantizeConfig,
    src: Any,
    variants: dict[str, Any],
    sizes: dict[str, int],
    work: Path,
    built: set[str],
) -> dict[str, dict[str, Any]]:
    """Each variant's dev entry (metrics, score, agreement with fp32 and the largest output
    difference, size), saved in `work` as soon as it is computed. Entries the run being
    resumed saved are kept, except those of variant folders built again."""
    saved = _saved_scores(work)
    record = {n: e for n, e in saved.items() if n in variants and n not in built}
    reference = _load_outputs(work / REFERENCE_OUTPUTS) if REFERENCE in record else None
    for name, variant in variants.items():
        if name in record:
            continue
        scores, outputs = predict_and_score(
            variant,
            src.tokenizer,
            src.task,
            src.splits,
            src.data.max_length,
            cfg.eval_batch_size,
            progress=True,
        )
        if reference is None:  # the first variant, fp32: what the others are compared with
            reference = outputs[0]
            _save_outputs(work / REFERENCE_OUTPUTS, reference)
        record[name] = {
            "metrics": scores,
            "score": metrics.task_score(scores),
            "agreement_with_fp32": agreement(reference, outputs[0], src.task.kind),
            "max_abs_diff_to_fp32": max_abs_diff(reference, outputs[0]),
            "size_bytes": sizes[name],
        }
        if name.startswith("onnx-int8"):  # does a prediction depend on its batch?
            record[name]["batch_invariance"] = batch_invariance(
                variant, src.enc, src.task.kind, progress=True
            )
        write_text_atomic(work / SCORES_FILE, json.dumps(record, indent=2) + "\n")
    return {name: record[name] for name in variants}


def _saved_scores(work: Path) -> dict[str, dict[str, Any]]:
    """The entries in the work folder's scores.json (none without fp32's saved outputs)."""
    try:
        saved = json.loads((work / SCORES_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return saved if (work / REFERENCE_OUTPUTS).is_file() else {}


def _save_outputs(path: Path, outputs: Outputs) -> None:
    """Write dev outputs atomically: [N, C], or a token task's [W_i, C] per sentence (saved
    as one [words, C] array and the word count of each sentence)."""
    arrays = {"logits": outputs}
    if not isinstance(outputs, np.ndarray):
        arrays["words"] = np.array([len(a) for a in outputs], dtype=np.int64)
        arrays["logits"] = np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as file:
        np.savez(file, **arrays)
    os.replace(tmp, path)


def _load_outputs(path: Path) -> Outputs:
    """Dev outputs as `_save_outputs` wrote them."""
    with np.load(path, allow_pickle=False) as saved:
        if "words" not in saved:
            return saved["logits"]
        words = saved["words"]
        if not len(words):
            return []
        return list(np.split(saved["logits"], np.cumsum(words)[:-1]))


def _resumable(work: Path) -> bool:
    """Whether the work folder holds anything a --resume would keep."""
    return (work / SCORES_FILE).is_file() or any((work / n).is_dir() for n in VARIANT_FOLDERS)


def _link(src: Path, dest: Path) -> None:
    """Hard-link file or folder `src` as `dest` (a copy where links cannot be made); nothing
    when `src` is absent."""
    if src.is_dir():
        shutil.copytree(src, dest, copy_function=_link_file)
    elif src.is_file():
        _link_file(src, dest)


def _link_file(src: str | Path, dest: str | Path) -> None:
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


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
    # The share of predictions that change between batch 1 and inside batches (int8 ONNX).
    moved = [b["batch_invariance"] for b in result["backends"].values() if "batch_invariance" in b]
    if moved:
        header.append(f"changed b=1 vs b={moved[0]['batch_sizes'][1]}")
    rows = [header]
    for name, b in result["backends"].items():
        speed = [
            f"{result['speed']['per_second'][name][bs]:.0f} "
            f"({result['speed']['ratio'][name][bs]:.2f}x)"
            for bs in sizes
        ]
        score, agree = f"{100 * b['score']:.2f}", f"{100 * b['agreement_with_fp32']:.2f}%"
        rows.append([name, score, agree, *speed, human_size(b["size_bytes"])])
        if moved:
            changed = b.get("batch_invariance", {}).get("changed")
            rows[-1].append("-" if changed is None else f"{100 * changed:.2f}%")
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
