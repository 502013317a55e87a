"""`lmshrink bench`: models of any kind timed and scored side by side on the dev texts.

Any mix of model folders (PyTorch fp32, PyTorch int8, ONNX fp32 or int8: see
`lmshrink.compress.formats`) runs in one process, interleaved (`measure.speed`), each model
reading the texts through its own tokenizer. The result holds batch-1 latency (p50, p95 per
example), throughput at each batch size, the dev metric, parameters, size, thread count, the
CPU and its flags, and ratios to the first model. Token models (NER) are timed on the dev
sentences encoded as their words, as they are scored and served, and scored by entity F1; an
example is then a sentence.

With `--end-to-end`, every model must be an ONNX folder and is timed as a server runs it:
each call from the raw dev strings to labels, tokenization (`tokenizers`) and numpy glue
included (`measure.end_to_end`); the result says `"timing": "end-to-end"` instead of
`"model-only"`. Scores are computed the same way in both modes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing
from pathlib import Path
from typing import Any

from lmshrink.config import BatchSpeedSettings, DataConfig, EvalSettings, ProcessSettings, option
from lmshrink.errors import ConfigError
from lmshrink.measure.speed import BENCH_FORMAT
from lmshrink.reporting.progress import for_command
from lmshrink.reporting.text import aligned, human_count, human_size


@dataclasses.dataclass
class BenchConfig(BatchSpeedSettings, EvalSettings, ProcessSettings):
    """`lmshrink bench`: time and score models side by side on the dev set, interleaved."""

    # Keys of earlier versions, and where their setting lives now.
    RENAMED: typing.ClassVar[dict[str, str]] = {
        "batch_size": "eval_batch_size",
        "batch_sizes": "speed_batch_sizes",
    }

    models: list[str] = option(
        [],
        "model folders to compare, the first being the reference of the ratios: a model or "
        "distill run folder (PyTorch fp32), a torch-int8/ folder (lmshrink quantize), an ONNX "
        "folder (lmshrink export or quantize).",
        positional=True,
    )
    json: str = option("", "also write every number to this JSON file.")
    end_to_end: bool = option(
        False,
        "time each call from the raw dev strings to labels, tokenization included, as a "
        "server runs it (tokenizers + ONNX Runtime + numpy); every model must then be an "
        "ONNX folder (lmshrink export or quantize). Without it, models are timed on "
        "pre-encoded batches (model-only).",
    )
    data: DataConfig = dataclasses.field(default_factory=DataConfig)

    def check(self) -> None:
        """Refuse settings that cannot work, before any model is loaded."""
        if not self.models:
            raise ConfigError("no models given; pass one or more model folders.")
        if not self.speed_batch_sizes or min(self.speed_batch_sizes) < 1:
            raise ConfigError(
                f"--speed-batch-sizes must list sizes of at least 1, got {self.speed_batch_sizes}."
            )
        if self.json and Path(self.json).expanduser().is_dir():
            raise ConfigError(f"--json {self.json}: is a folder; pass a file path for the results.")
        if min(self.speed_examples, self.rounds, self.eval_batch_size) < 1 or self.threads < 0:
            raise ConfigError(
                "--speed-examples, --rounds and --eval-batch-size must be at least 1, "
                "--threads 0 or more."
            )


@for_command
def bench(cfg: BenchConfig) -> dict[str, Any]:
    """Score every model on dev and time them interleaved in this process; returns (and with
    `--json` writes) the models' numbers, ratios to the first model, and the machine."""
    import torch

    from lmshrink import __version__
    from lmshrink.compress.formats import load_served, model_kind, task_data
    from lmshrink.compress.onnx import require_onnx
    from lmshrink.data.splits import load_eval_splits, resolve_task
    from lmshrink.measure import metrics
    from lmshrink.measure.machine import cpu_flags, int8_flags, machine_info
    from lmshrink.measure.scoring import score_model
    from lmshrink.measure.speed import measure_speed
    from lmshrink.runs import apply_threads, write_json_file

    cfg.check()
    kinds = [model_kind(arg) for arg in cfg.models]  # every argument checked before loading
    if cfg.end_to_end:
        _check_end_to_end(cfg.models, kinds)
    if any(kind == "onnx" for kind, _ in kinds):
        require_onnx()
    data = task_data(cfg.data, [folder for _, folder in kinds])
    task = resolve_task(data)
    apply_threads(cfg.threads)
    names = _unique_names(cfg.models)
    loaded = [
        load_served(name, kind, folder, task)
        for name, (kind, folder) in zip(names, kinds, strict=True)
    ]
    splits = load_eval_splits(task, "dev", data, cfg.seed)
    entries = []
    for m in loaded:
        scores = score_model(
            m.model, m.tokenizer, task, splits, data.max_length, cfg.eval_batch_size, True
        )
        entries.append({"scores": scores, "score": metrics.task_score(scores)})
    limit = {bs: cfg.speed_examples for bs in cfg.speed_batch_sizes}
    if cfg.end_to_end:
        from lmshrink.measure.end_to_end import OnnxTextServer, time_end_to_end

        threads = torch.get_num_threads()  # as the sessions that score use
        servers = {m.name: OnnxTextServer(m.path, threads, name=m.name) for m in loaded}
        speed = time_end_to_end(
            servers, _raw_texts(splits[0]), tuple(cfg.speed_batch_sizes), limit, cfg.rounds
        )
    else:
        speed = measure_speed(
            {m.name: (m.model, _encoded(m, splits[0], data.max_length)) for m in loaded},
            batch_sizes=tuple(cfg.speed_batch_sizes),
            limit=limit,
            rounds=cfg.rounds,
        )
    first = loaded[0].name
    models = []
    for m, entry in zip(loaded, entries, strict=True):
        latency = speed["latency_ms"][m.name].get("1")
        ref_latency = speed["latency_ms"][first].get("1")
        ref = models[0] if models else {"parameters": m.parameters, "size_bytes": m.size_bytes}
        ref_score = models[0]["score"] if models else entry["score"]
        models.append(
            {
                "name": m.name,
                "path": str(Path(m.path).resolve()),
                "kind": m.kind,
                "metrics": entry["scores"],
                "score": entry["score"],
                "parameters": m.parameters,
                "parameters_source": m.parameters_source,
                "size_bytes": m.size_bytes,
                "disk_bytes": m.disk_bytes,
                "latency_ms": {"p50": latency["p50"], "p95": latency["p95"]} if latency else None,
                "per_second": speed["per_second"][m.name],
                "ratio": {
                    "latency_p50": ref_latency["p50"] / latency["p50"] if latency else None,
                    "per_second": speed["ratio"][m.name],
                    "parameters": ref["parameters"] / max(1, m.parameters),
                    "size": ref["size_bytes"] / max(1, m.size_bytes),
                    "score": entry["score"] / ref_score if ref_score else None,
                },
            }
        )
    flags = int8_flags()
    result = {
        "format": BENCH_FORMAT,
        "lmshrink_version": __version__,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "task": task.name,
        "split": "dev",
        "dev": splits[0].source,
        "files": [s.source for s in splits],
        "examples": sum(len(s) for s in splits),
        "reference": first,
        "timing": "end-to-end" if cfg.end_to_end else "model-only",
        "settings": {
            "batch_sizes": list(cfg.speed_batch_sizes),
            "speed_examples": cfg.speed_examples,
            "rounds": cfg.rounds,
            "max_length": data.max_length,
            "padding": "dynamic (each batch padded to its longest example), dev order",
            "timed": (
                "each call from the raw dev strings to labels: tokenizers (tokenizer.json), "
                "ONNX Runtime, numpy"
                if cfg.end_to_end
                else "each model call on batches encoded beforehand (model-only)"
            ),
        },
        **_token_notes(task, splits, cfg.end_to_end),
        "threads": torch.get_num_threads(),
        "cpu": {"model": machine_info()["cpu"], "int8_flags": flags, "flags": sorted(cpu_flags())},
        "machine": machine_info(),
        "models": models,
        "speed": speed,
    }
    if cfg.json:
        write_json_file(Path(cfg.json).expanduser(), result)
    return result


def _encoded(m: Any, split: Any, max_length: int) -> Any:
    """The split as `m` reads it: through its own tokenizer, with word-shape ids for a token
    model that reads them (the BiLSTM tagger with word shapes, PyTorch or ONNX)."""
    from lmshrink.data.batching import encode

    shapes = bool(getattr(m.model, "reads_word_shapes", False))
    return encode(m.tokenizer, split, max_length, word_shapes=shapes)


def _check_end_to_end(args: list[str], kinds: list[tuple[str, str]]) -> None:
    """--end-to-end serves raw strings through tokenizer.json and ONNX Runtime: every model
    must be an ONNX folder."""
    for arg, (kind, _) in zip(args, kinds, strict=True):
        if kind != "onnx":
            raise ConfigError(
                f"{arg}: is a {kind} model folder, and --end-to-end times ONNX folders only "
                f"(raw strings through tokenizer.json and ONNX Runtime); export it first with "
                f"lmshrink export {arg} --out <folder>, and bench that folder."
            )


def _raw_texts(split: Any) -> list[tuple[str, ...]]:
    """The split's examples as raw strings, as a server receives them: a sentence task's
    texts (pairs as pairs); a token task's sentences as their words joined by spaces."""
    if hasattr(split, "words"):
        return [(" ".join(words),) for words in split.words]
    return list(split.texts)


def _token_notes(task: Any, splits: list[Any], end_to_end: bool = False) -> dict[str, Any]:
    """What a token task's numbers count (nothing for sentence tasks): examples are
    sentences, read as words; the score is entity F1."""
    if not task.kind.token_level:
        return {}
    timed = (
        "timed end to end on each dev sentence as raw text (its words joined by spaces), cut "
        "into words by lmshrink's rule (split_words), encoded as pre-split words"
        if end_to_end
        else "each dev sentence encoded as its words (is_split_into_words)"
    )
    return {
        "words": sum(s.num_words for s in splits),
        "inputs": f"{timed}, the tag read at each word's first sub-token; speed counts sentences",
    }


def _unique_names(args: list[str]) -> list[str]:
    """The arguments as given, made unique (a model given twice gets #2)."""
    names: list[str] = []
    for arg in args:
        name, k = arg, 2
        while name in names:
            name, k = f"{arg}#{k}", k + 1
        names.append(name)
    return names


def format_table(result: dict[str, Any]) -> str:
    """The bench result as an aligned plain-text table, with the machine below it."""
    sizes = [str(bs) for bs in result["settings"]["batch_sizes"]]
    token = "words" in result  # a token task: entity F1, sentences per second
    header = ["model", "kind", "dev entity F1" if token else "dev score", "b=1 p50 ms"]
    header += ["b=1 p95 ms"] + [f"{'sent' if token else 'ex'}/s b={bs}" for bs in sizes]
    header += ["params", "size"]
    rows = [header]
    for m in result["models"]:
        lat, ratio = m["latency_ms"], m["ratio"]
        cells = [m["name"], m["kind"], f"{100 * m['score']:.2f}"]
        if lat:
            cells += [f"{lat['p50']:.2f} ({ratio['latency_p50']:.2f}x)", f"{lat['p95']:.2f}"]
        else:
            cells += ["n/a", "n/a"]
        cells += [f"{m['per_second'][bs]:.0f} ({ratio['per_second'][bs]:.2f}x)" for bs in sizes]
        cells += [
            f"{human_count(m['parameters'])} ({ratio['parameters']:.1f}x)",
            f"{human_size(m['size_bytes'])} ({ratio['size']:.1f}x)",
        ]
        rows.append(cells)
    lines = aligned(rows)
    flags = ", ".join(n for n, has in result["cpu"]["int8_flags"].items() if has) or "none"
    count = (
        f"{result['examples']} sentences, {result['words']:,} words"
        if token
        else f"{result['examples']} examples"
    )
    timing = result.get("timing", "model-only")
    timed = (
        "end-to-end (raw strings to labels, tokenization included)"
        if timing == "end-to-end"
        else "model-only (pre-encoded batches, tokenization not included)"
    )
    lines += [
        f"timing: {timed}.",
        f"ratios (x) against {result['reference']}: speed (>1 is faster), parameters and size "
        f"(>1 is smaller); latency is per {'sentence' if token else 'example'} at batch size 1.",
        f"{result['task']} {result.get('split', 'dev')}, {count} "
        f"({', '.join(result.get('files') or [result['dev']])}); cpu: {result['cpu']['model']} "
        f"({result['threads']} threads; int8 flags: {flags})",
    ]
    return "\n".join(lines)
