"""Step 1 of the search: every architecture timed untrained, in every backend, on this CPU.

The speed of an architecture does not depend on its weights, so each student is built as its
family builds it (vocabulary, embeddings and layers from the teacher; the rest random; a
pruned teacher is the teacher cut to its kept share without estimating importance),
exported to ONNX (with the parity check) and quantized to int8 (dynamic, and static with a
few calibration examples), and timed end to end on the task's real dev texts: raw strings in,
the tokenizer a server would use, labels out (`lmshrink.measure.end_to_end`), all candidates
interleaved in one process with the thread count given. The model-only time (pre-tokenized
batches, `measure.speed`) is kept beside it. Candidates over the budget are dropped in
minutes, before anything is trained.

Each architecture's exports land in `latency/<name>/{onnx-fp32,onnx-int8,onnx-int8-static}/`
(fastText: `fasttext/`), each folder written whole or not at all, so a killed search redoes
only what it had not finished.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmshrink.search.candidates import (
    FASTTEXT,
    ONNX_BACKENDS,
    PRUNED,
    TEACHER,
    Architecture,
    Candidate,
    fasttext_settings,
    pruned_keep,
)

# An untrained graph is timed, never scored: a few calibration examples give it the shape of
# a static int8 graph (its speed does not depend on the scales); a trained one is calibrated
# as `lmshrink quantize` calibrates it.
TIMING_CALIBRATION_EXAMPLES = 16


def export_model(
    src: Any,
    folder: Path,
    log: Callable[[str], None],
    parity_examples: int = 256,
    calibration_examples: int | None = None,
    seed: int = 0,
) -> None:
    """`src` (a ModelSource) as onnx-fp32/, onnx-int8/ (dynamic) and onnx-int8-static/
    (calibrated on `calibration_examples` training examples drawn with `seed`; None: as many
    as `lmshrink quantize` takes by default) under `folder`, each written whole (a folder
    present is complete and is kept); the parity check compares `parity_examples` dev
    examples at each batch size."""
    from lmshrink.compress.int8 import (
        CALIBRATION_EXAMPLES,
        ONNX_INT8_FOLDERS,
        calibration_set,
        onnx_int8_folder,
    )
    from lmshrink.compress.onnx import OnnxSettings, export_folder
    from lmshrink.runs import staged_output

    fp32 = folder / "onnx-fp32"
    if not fp32.is_dir():
        with staged_output(fp32) as stage:
            export_folder(src, stage, OnnxSettings(parity_examples=parity_examples))
    for mode, name in ONNX_INT8_FOLDERS.items():
        if (folder / name).is_dir():
            continue
        calibration = None
        if mode == "static":
            examples = calibration_examples or CALIBRATION_EXAMPLES
            calibration = calibration_set(src, examples, seed)
        with staged_output(folder / name) as stage:
            stage.rmdir()  # onnx_int8_folder makes it
            onnx_int8_folder(fp32, stage, mode, calibration)
    log(f"  exported {folder.name} ({', '.join(ONNX_BACKENDS)})")


def untrained_source(arch: Architecture, teacher: Any, train_texts: list[Any]) -> Any:
    """A ModelSource holding `arch` as its family builds it from the teacher (a ModelSource),
    before any training: the model a latency measurement needs."""
    import torch

    from lmshrink.models.loading import task_head_settings
    from lmshrink.models.sources import ModelSource
    from lmshrink.students import STUDENTS

    if arch.family == PRUNED:
        model = pruned_untrained(teacher.model, pruned_keep(arch))
        return ModelSource(
            teacher.folder, teacher.data, teacher.task, teacher.tokenizer, model, teacher.splits
        )
    family = STUDENTS.get(arch.family)
    torch.manual_seed(0)
    built = family.build(
        teacher.model,
        teacher.tokenizer,
        train_texts,
        task_head_settings(teacher.task),
        teacher.data.max_length,
        **dict(arch.settings),
    )
    model = built.final_model.eval()
    return ModelSource(
        teacher.folder, teacher.data, teacher.task, built.tokenizer, model, teacher.splits
    )


def pruned_untrained(model: Any, keep: float) -> Any:
    """The teacher `model` physically pruned to `keep` of its encoder parameters, as
    `lmshrink prune --target-params keep` shapes it (`choose_keep`, `prune_to`), without
    estimating importance: speed depends on the shapes only. The importance is each unit's
    position (in every layer, the first heads and FFN neurons rank highest), so after
    `choose_keep`'s per-layer normalisation the layers take turns and keep equal numbers
    (within one); prune keeps as many units in all, spread by their real importance."""
    import math

    import torch

    from lmshrink.compress.pruning import (
        Importance,
        choose_keep,
        encoder_parameters,
        from_bert,
        prune_to,
    )

    full = from_bert(model)  # prune_to makes a new model: the teacher stays as it is
    heads = [layer.attention.self.num_heads for layer in full.layers]
    neurons = [layer.ffn_size for layer in full.layers]
    importance = Importance(
        heads=[torch.arange(n, 0, -1, dtype=torch.float32) for n in heads],  # [h_l]: h..1
        neurons=[torch.arange(n, 0, -1, dtype=torch.float32) for n in neurons],  # [I_l]
    )
    budget = math.floor(keep * encoder_parameters(full))
    keep_heads, keep_neurons = choose_keep(full, importance, budget)
    return prune_to(full, keep_heads, keep_neurons).eval()


def prepare(
    archs: list[Architecture],
    teacher: Any,
    train: Any,
    root: Path,
    log: Callable[[str], None],
    seed: int = 0,
) -> dict[str, Path]:
    """Export (or train, for fastText: a quick model on the gold labels, as fast as a fully
    trained one) every architecture for timing; returns {candidate name: served folder}.
    `seed` draws the static int8 calibration examples."""
    from lmshrink.search.fasttext_student import FastTextSettings, train_fasttext

    # a token task's sentences in place: student builders read any sequence of word lists
    texts = train.words if teacher.task.kind.token_level else train.texts
    folders: dict[str, Path] = {}
    for arch in archs:
        folder = root / arch.name
        if arch.family == FASTTEXT:
            served = folder / "fasttext"
            if not served.is_dir():
                from lmshrink.runs import staged_output

                with staged_output(served) as stage:
                    settings = fasttext_settings(arch, FastTextSettings)
                    train_fasttext(
                        train.texts, list(train.labels), teacher.task.labels, stage, settings
                    )
                log(f"  trained {arch.name} on the gold labels, for timing")
            folders[Candidate(arch, "fasttext").name] = served
            continue
        if not all((folder / b).is_dir() for b in arch.backends):
            src = teacher if arch.family == TEACHER else untrained_source(arch, teacher, texts)
            # an untrained graph only needs to be the right one: a short parity check and a
            # few calibration examples; the teacher's export is served as it is, so it gets
            # the full ones
            untrained = src is not teacher
            export_model(
                src,
                folder,
                log,
                parity_examples=32 if untrained else 256,
                calibration_examples=TIMING_CALIBRATION_EXAMPLES if untrained else None,
                seed=seed,
            )
        for backend in arch.backends:
            folders[Candidate(arch, backend).name] = folder / backend
    return folders


def serve(name: str, folder: Path, threads: int) -> Any:
    """The server a user would run for a candidate's folder (fastText or ONNX Runtime)."""
    from lmshrink.measure.end_to_end import OnnxTextServer

    if name.endswith("/fasttext"):
        from lmshrink.search.fasttext_student import FastTextServer

        return FastTextServer.from_folder(folder)
    return OnnxTextServer(folder, threads=threads)


def time_all(
    folders: dict[str, Path],
    dev: Any,
    threads: int,
    examples: int,
    rounds: int,
) -> dict[str, dict[str, Any]]:
    """End-to-end latency (batch 1: p50 and p95 ms, and each round's p50) and throughput
    (batch 32: examples/s) of every candidate, and the model-only batch-1 p50 of the ONNX
    ones, measured interleaved on the first `examples` dev texts. Returns {candidate:
    numbers}."""
    from lmshrink.measure.end_to_end import time_end_to_end

    texts = _texts(dev)[:examples]
    servers = {name: serve(name, folder, threads) for name, folder in folders.items()}
    e2e = time_end_to_end(servers, texts, (1, 32), {1: examples, 32: 4 * examples}, rounds)
    model_only = _model_only(folders, dev, threads, examples, rounds)
    result = {}
    for name in folders:
        batch1 = e2e["latency_ms"][name]["1"]
        result[name] = {
            "p50_ms": batch1["p50"],
            "p95_ms": batch1["p95"],
            "round_p50_ms": batch1["round_p50"],
            "per_second_b32": e2e["per_second"][name]["32"],
        }
        if name in model_only:
            result[name]["model_p50_ms"] = model_only[name]
    return result


def _texts(split: Any) -> list[Any]:
    """A split's inputs as a server takes them: texts, or a token task's sentences joined."""
    words = getattr(split, "words", None)
    if words is not None:
        return [(" ".join(w),) for w in words]
    return list(split.texts)


def _model_only(
    folders: dict[str, Path], dev: Any, threads: int, examples: int, rounds: int
) -> dict[str, float]:
    """Batch-1 p50 ms of each ONNX graph on pre-tokenized dev batches (what `lmshrink bench`
    times without --end-to-end): the model's share of the end-to-end time."""
    from lmshrink.compress.onnx import OnnxClassifier
    from lmshrink.data.batching import encode
    from lmshrink.measure.speed import measure_speed
    from lmshrink.models.loading import load_tokenizer

    models = {}
    # Every graph reads the teacher tokenizer's ids at the search's max length, so dev is
    # encoded once (twice when a BiLSTM tagger also reads word shapes).
    encoded: dict[bool, Any] = {}
    for name, folder in folders.items():
        if name.endswith("/fasttext"):
            continue
        session = OnnxClassifier.from_folder(folder, threads)
        shapes = session.reads_word_shapes
        if shapes not in encoded:
            meta = json.loads((folder / "export.json").read_text())
            tokenizer = load_tokenizer(str(folder))
            max_length = meta["tokenizer"]["max_length"]
            encoded[shapes] = encode(tokenizer, dev, max_length, word_shapes=shapes)
        models[name] = (session, encoded[shapes])
    if not models:
        return {}
    speed = measure_speed(models, (1,), {1: examples}, rounds)
    return {name: speed["latency_ms"][name]["1"]["p50"] for name in models}
