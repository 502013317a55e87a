"""`lmshrink distill`: stage-wise distillation of a teacher into a small student.

The XtremeDistil recipe, as data rather than code: a list of stages, each with the examples
it iterates (the teacher-labelled transfer set, or the gold-labelled rows), its losses and
their weights, its optimiser settings, top-down gradual unfreezing and early stopping on dev.
The default schedule matches the student's representation to the teacher's, then its
logits, then learns from the gold labels. Runs on `accelerate` (one process or many).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from lmshrink.config import DataConfig, option
from lmshrink.data.transfer import TransferConfig
from lmshrink.distillation.layer_map import LayerMapConfig
from lmshrink.distillation.stages import (
    PER_TOKEN,
    StageConfig,
    default_stages,
    loss_inputs,
    spec_inputs,
    validate_stages,
)
from lmshrink.distillation.trainer import DevData, Distiller, StageData, main_process_logger
from lmshrink.errors import ConfigError


@dataclasses.dataclass
class StudentConfig:
    """The student to build. Settings left empty take the family's default; a setting that
    does not apply to the chosen family is an error."""

    kind: str = option(
        "bilstm",
        "student family: bilstm (XtremeDistil), layers (a subset "
        "of the teacher's layers), narrow (fewer/narrower layers initialised "
        "from the teacher), pretrained (any HF checkpoint, its own tokenizer), theseus "
        "(BERT-of-Theseus progressive module replacing).",
        flag="student",
    )
    embedding_dim: int | None = option(
        None, "bilstm: word embedding size (the teacher's embeddings reduced by PCA; default 300)."
    )
    hidden_size: int | None = option(
        None, "bilstm: LSTM units per direction (default 300); narrow: hidden width (default 256)."
    )
    num_layers: int | None = option(None, "bilstm: number of BiLSTM layers (default 1).")
    dropout: float | None = option(
        None, "bilstm: dropout on embeddings and the pooled state (default 0.2)."
    )
    pooling: str | None = option(None, "bilstm: max, mean or attention (default max).")
    layers: int | None = option(
        None,
        "layers/narrow/theseus: number of transformer layers (default 3 / 2 / 3).",
        flag="student_layers",
    )
    layer_ids: list[int] = option(
        [],
        "layers: which teacher layers to keep (0-based); "
        "default: a uniform choice ending with the last.",
    )
    num_heads: int | None = option(
        None, "narrow: attention heads (default: keep the teacher's head size)."
    )
    replace_start: float | None = option(
        None,
        "theseus: probability of replacing a teacher layer group at the first step; it rises "
        "linearly to 1 (default 0.3).",
    )
    replace_steps: int | None = option(
        None,
        "theseus: training steps until every group is replaced; later steps train the "
        "student alone (default 1000).",
    )
    intermediate_size: int | None = option(None, "narrow: FFN size (default 4 x hidden).")
    model: str = option(
        "", "pretrained: the student checkpoint (hub id or folder).", flag="student_model"
    )


# The settings each student family takes (the rest must stay empty).
STUDENT_SETTINGS = {
    "bilstm": ("embedding_dim", "hidden_size", "num_layers", "dropout", "pooling"),
    "layers": ("layers", "layer_ids"),
    "narrow": ("layers", "hidden_size", "num_heads", "intermediate_size"),
    "pretrained": ("model",),
    "theseus": ("layers", "replace_start", "replace_steps"),
}


def student_settings(cfg: StudentConfig) -> dict[str, Any]:
    """The builder arguments of `cfg.kind`; a setting of another family is an error."""
    given = {
        k: v for k, v in dataclasses.asdict(cfg).items() if k != "kind" and v not in (None, "", [])
    }
    accepted = STUDENT_SETTINGS.get(cfg.kind, ())
    foreign = sorted(set(given) - set(accepted))
    if foreign:
        raise ConfigError(
            f"student setting(s) {', '.join(foreign)} do not apply to the "
            f"{cfg.kind} student; it takes {', '.join(accepted)}."
        )
    return given


@dataclasses.dataclass
class LabellingConfig:
    """How the teacher labels the transfer set."""

    batch_size: int = option(128, "teacher batch size when labelling.", flag="label_batch_size")
    repr_layer: int = option(
        -1,
        "teacher hidden-state index matched by representation "
        "losses (0: embeddings, -1: last layer).",
    )
    repr_pooling: str = option(
        "cls", "how the teacher's token states become one vector: cls or mean."
    )
    shard_size: int = option(4096, "examples per cache shard (the unit of resumption).")
    layer_cache_gb: float = option(
        4.0,
        "largest cache of the teacher's per-token targets of layer-wise losses (hidden "
        "states, attentions, value vectors; fp16, held in memory by each process); a larger "
        "one, or 0, runs the teacher on every batch instead.",
    )


@dataclasses.dataclass
class DistillConfig:
    """`lmshrink distill`: train a small student from a teacher and unlabeled data."""

    teacher: str = option("", "fine-tuned teacher folder (from lmshrink finetune).")
    out: str = option("", "run folder: config, cache, checkpoints, model/, reports.")
    overwrite: bool = option(False, "replace --out if it holds another run.")
    resume: bool = option(False, "continue the run in --out from its last checkpoint.")
    seed: int = option(42, "random seed (initialisation, data order, subsets).")
    checkpoint_every: int = option(200, "write a resumable checkpoint every N steps.")
    max_grad_norm: float = option(1.0, "gradient clipping norm (0: off).")
    eval_batch_size: int = option(256, "evaluation batch size.")
    measure_speed: bool = option(True, "measure CPU speed against the teacher for the report.")
    progress: bool = option(True, "show progress bars.")
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    transfer: TransferConfig = dataclasses.field(default_factory=TransferConfig)
    student: StudentConfig = dataclasses.field(default_factory=StudentConfig)
    labelling: LabellingConfig = dataclasses.field(default_factory=LabellingConfig)
    layer_map: LayerMapConfig = dataclasses.field(default_factory=LayerMapConfig)
    stages: list[StageConfig] = option(
        [], "the stages, in order (empty: the XtremeDistil schedule for the task)."
    )


def run_folder_paths(out: Path) -> dict[str, Path]:
    return {
        "cache": out / "cache",
        "checkpoints": out / "checkpoints",
        "model": out / "model",
        "config": out / "config.yaml",
        "best": out / "checkpoints" / "stage-best.safetensors",
    }


def _prepare_out(cfg: DistillConfig, out: Path) -> None:
    """A new run needs an empty --out (or --overwrite); --resume needs the same config."""
    import shutil

    from lmshrink.config import load_yaml, to_dict
    from lmshrink.errors import RunFolderError
    from lmshrink.runs import check_out

    if cfg.resume:
        saved_path = out / "config.yaml"
        if not saved_path.is_file():
            raise RunFolderError(
                f"{out}: no run to resume (no config.yaml); start it without --resume."
            )
        ignore = ("resume", "overwrite", "progress")
        saved = {
            k: v
            for k, v in to_dict(load_yaml(DistillConfig, saved_path)).items()
            if k not in ignore
        }
        mine = {k: v for k, v in to_dict(cfg).items() if k not in ignore}
        if saved != mine:
            changed = sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k))
            raise RunFolderError(
                f"{out}: --resume needs the run's own settings, but "
                f"{', '.join(changed)} differ from its config.yaml; drop the "
                "changed options or start a new run."
            )
        return
    check_out(cfg.out, cfg.overwrite)
    if out.exists():  # --overwrite: the old run goes only now that the new one is valid
        for item in out.iterdir():
            # The teacher cache is keyed by a fingerprint of its inputs, so it stays valid
            # and a rerun with the same teacher and data skips labelling.
            if item.name != "cache":
                shutil.rmtree(item) if item.is_dir() else item.unlink()


def distill(cfg: DistillConfig) -> dict[str, Any]:
    """Run every stage and write model/, report.json and report.md into the run folder."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    from lmshrink.config import dump_yaml
    from lmshrink.data.batching import encode
    from lmshrink.data.splits import Split, load_eval_splits, read_split, resolve_task
    from lmshrink.data.transfer import build_transfer_set
    from lmshrink.distillation.objective import prepare_for_attention_losses
    from lmshrink.distillation.teacher_cache import (
        TeacherCache,
        folder_fingerprint,
        label_transfer_set,
    )
    from lmshrink.models.loading import (
        count_parameters,
        load_for_eval,
        resolve_model_source,
        task_head_settings,
    )
    from lmshrink.students import STUDENTS, student_tokenizer
    from lmshrink.training.checkpoint import latest_checkpoint, load_checkpoint
    from lmshrink.training.optim import set_seed

    # Theseus leaves the successor layers of unreplaced groups without gradient in a step.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=cfg.student.kind == "theseus")
    acc = Accelerator(cpu=not torch.cuda.is_available(), kwargs_handlers=[ddp])
    out = Path(cfg.out)
    paths = run_folder_paths(out)
    task = resolve_task(cfg.data)
    if not cfg.stages:
        cfg.stages = default_stages(task.is_regression)
    validate_stages(cfg.stages)
    build_student = STUDENTS.get(cfg.student.kind)
    settings = student_settings(cfg.student)
    if acc.is_main_process:
        _prepare_out(cfg, out)
        out.mkdir(parents=True, exist_ok=True)
        dump_yaml(cfg, paths["config"])
    acc.wait_for_everyone()
    log = main_process_logger(acc)

    timings: dict[str, float] = {}
    train = read_split(task, "train", cfg.data).subset(cfg.data.max_train_samples, cfg.seed)
    labeled = train.subset(cfg.data.num_labeled, cfg.seed)
    # dev and its companions (MNLI mismatched), read once: for the stages, for keeping dev
    # texts out of the transfer set, and for the final scores.
    devs = load_eval_splits(task, "dev", cfg.data, cfg.seed)
    dev_split = devs[0]
    teacher_dir = resolve_model_source(cfg.teacher)
    tokenizer, teacher = load_for_eval(teacher_dir, task)
    if cfg.transfer.augment.mask_token == "[MASK]" and tokenizer.mask_token:
        cfg.transfer.augment.mask_token = tokenizer.mask_token  # e.g. <mask> for RoBERTa
    transfer = build_transfer_set(
        cfg.transfer, task, train, cfg.seed, progress=cfg.progress and acc.is_local_main_process
    )
    transfer = _without_eval_texts(transfer, devs)
    log(f"transfer set: {len(transfer.texts):,} examples {transfer.counts}")

    set_seed(cfg.seed)
    student = build_student(
        teacher,
        tokenizer,
        transfer.texts + labeled.texts,
        task_head_settings(task),
        cfg.data.max_length,
        **settings,
    )
    # A pretrained student reads its own tokenizer; the others read the teacher's ids.
    student_tok = student_tokenizer(student, tokenizer)
    log(
        f"student: {cfg.student.kind}, vocabulary {student.config.vocab_size:,}, "
        f"{count_parameters(student):,} parameters"
    )

    # The student is built, and the layer-wise losses checked against both models, before
    # the teacher labels anything: a recipe that cannot work fails in seconds, not after
    # labelling.
    pairs, compares_attention = _check_layer_losses(cfg, student, student_tok is tokenizer, teacher)

    # The teacher labels the transfer set (and dev, for representation stages) once.
    needs_repr = any("teacher_repr" in loss_inputs(s) for s in cfg.stages)
    lab = cfg.labelling
    key = {
        "teacher": folder_fingerprint(teacher_dir),
        "max_length": cfg.data.max_length,
        "tokenizer": type(tokenizer).__name__,
        "vocab": len(tokenizer),
        "repr": [lab.repr_layer, lab.repr_pooling] if needs_repr else None,
    }
    outputs = {}
    start = time.perf_counter()
    # Gold-label-only schedules (a baseline) read no teacher outputs: skip labelling.
    uses_teacher = any(stage.data == "transfer" for stage in cfg.stages)
    to_label = [
        ("transfer", transfer.texts, transfer.fingerprint()),
        ("dev", dev_split.texts, dev_split.fingerprint()),
    ]
    for name, texts, fp in to_label if uses_teacher else []:
        cache = TeacherCache(paths["cache"], {**key, "texts": fp}, len(texts), lab.shard_size)
        stats = label_transfer_set(
            teacher,
            tokenizer,
            texts,
            cache,
            cfg.data.max_length,
            lab.batch_size,
            lab.repr_layer if needs_repr else None,
            lab.repr_pooling,
            acc.process_index,
            acc.num_processes,
            cfg.progress and acc.is_local_main_process,
        )
        acc.wait_for_everyone()
        if name == "transfer":
            log(
                f"teacher outputs: reused the cache {cache.folder}"
                if stats.reused
                else f"teacher outputs: labelled {stats.shards_total - stats.shards_done_before} "
                f"of {stats.shards_total} shard(s) into {cache.folder}"
            )
        outputs[name] = cache.load()
    timings["labelling_seconds"] = time.perf_counter() - start

    def targets(o: Any | None) -> dict[str, Any]:
        if o is None:
            return {}
        named = {"teacher_logits": o.logits, "teacher_repr": o.representation}
        return {k: v for k, v in named.items() if v is not None}

    transfer_enc = encode(
        student_tok, Split(task.name, "transfer", "", transfer.texts, None), cfg.data.max_length
    )
    if compares_attention:  # attention maps are compared: both models on eager attention
        prepare_for_attention_losses(student)
        prepare_for_attention_losses(teacher)
    start = time.perf_counter()
    layer_targets = _cached_layer_targets(
        cfg, acc, paths, teacher, tokenizer, transfer, transfer_enc.lengths, key, pairs, log
    )
    timings["labelling_seconds"] += time.perf_counter() - start
    distiller = Distiller(
        cfg,
        acc,
        paths,
        task,
        student,
        StageData(transfer_enc, targets(outputs.get("transfer")), layer_targets),
        StageData(encode(student_tok, labeled, cfg.data.max_length), {}),
        DevData(dev_split, encode(student_tok, dev_split, cfg.data.max_length)),
        targets(outputs.get("dev")),
        teacher.to(acc.device),
        pairs,
    )

    # Resume: stages before the checkpoint's are done; its own continues unless finished.
    first, resume_from = 0, None
    last = latest_checkpoint(paths["checkpoints"]) if cfg.resume else None
    if last is not None:
        weights, _, state = load_checkpoint(last)
        student.load_state_dict(
            {k.removeprefix("student."): v for k, v in weights.items() if k.startswith("student.")}
        )
        distiller.history = state["history"]
        first = state["stage"] + 1 if state["done"] else state["stage"]
        resume_from = None if state["done"] else last
        log(f"resuming from {last.name}")

    start = time.perf_counter()
    for index in range(first, len(cfg.stages)):
        distiller.run_stage(index, cfg.stages[index], resume_from if index == first else None)
    timings["training_seconds"] = time.perf_counter() - start

    from lmshrink.reporting.run_report import finish_run

    return finish_run(
        cfg,
        acc,
        paths,
        task,
        teacher,
        student,
        tokenizer,
        student_tok,
        teacher_dir,
        distiller,
        transfer,
        devs,
        timings,
    )


def _cached_layer_targets(
    cfg: DistillConfig,
    acc: Any,
    paths: dict[str, Path],
    teacher: Any,
    tokenizer: Any,
    transfer: Any,
    lengths: list[int],
    key: dict[str, Any],
    pairs: list[tuple[int, int]] | None,
    log: Any,
) -> Any:
    """The teacher's per-token targets of the transfer stages' layer-wise losses, labelled
    once into the cache (or reused from it); None when no loss needs them, or when they
    would outgrow `labelling.layer_cache_gb` (the teacher then runs on every batch)."""
    from lmshrink.distillation.layer_cache import (
        KNOWN_LOSSES,
        TEACHER_TOKEN_TARGETS,
        LayerTargets,
        estimated_bytes,
        label_layer_targets,
        layer_needs,
    )
    from lmshrink.distillation.teacher_cache import TeacherCache

    specs = [spec for s in cfg.stages if s.data == "transfer" for spec in s.losses]
    unknown = sorted(
        {
            spec.name
            for spec in specs
            if spec_inputs(spec) & TEACHER_TOKEN_TARGETS and spec.name not in KNOWN_LOSSES
        }
    )
    if unknown:
        log(
            f"teacher layer targets: not cached ({', '.join(unknown)} reads teacher layers "
            "the cache does not know); the teacher runs on every batch instead"
        )
        return None
    needs = layer_needs([spec.name for spec in specs], pairs)
    if not needs:
        return None
    tc = teacher.config
    size_gb = (
        estimated_bytes(lengths, needs, tc.hidden_size, tc.num_attention_heads, tc.hidden_size)
        / 2**30
    )
    cap = cfg.labelling.layer_cache_gb
    if size_gb > cap:
        why = (
            "caching is off (labelling.layer_cache_gb = 0)"
            if cap <= 0
            else f"{size_gb:.2f} GB would exceed labelling.layer_cache_gb = {cap:g} (raise it "
            "to cache them)"
        )
        log(f"teacher layer targets: {why}; the teacher runs on every batch instead")
        return None
    lab = cfg.labelling
    cache = TeacherCache(
        paths["cache"],
        {**key, "texts": transfer.fingerprint(), "layers": needs.as_key()},
        len(transfer.texts),
        lab.shard_size,
    )
    stats = label_layer_targets(
        teacher,
        tokenizer,
        transfer.texts,
        cache,
        needs,
        cfg.data.max_length,
        lab.batch_size,
        acc.process_index,
        acc.num_processes,
        cfg.progress and acc.is_local_main_process,
    )
    acc.wait_for_everyone()
    log(
        f"teacher layer targets ({size_gb:.2f} GB, fp16): "
        + ("reused the cache" if stats.reused else "cached")
        + f" {cache.folder}"
    )
    return LayerTargets.load(cache, needs, tc.num_attention_heads)


def _check_layer_losses(
    cfg: DistillConfig, student: Any, same_tokenizer: bool, teacher: Any
) -> tuple[list[tuple[int, int]] | None, bool]:
    """For stages with per-token losses: check that the pair of models fits them and map
    the layers. Returns (layer pairs, or None when no loss needs them; whether attention
    maps are compared, which needs eager attention)."""
    from lmshrink.distillation.layer_map import (
        LayerShape,
        check_attention_heads,
        check_relation_heads,
        map_layers,
    )

    specs = [spec for stage in cfg.stages for spec in stage.losses]
    per_token = [spec for spec in specs if spec_inputs(spec) & PER_TOKEN]
    if not per_token:
        return None, False
    names = sorted({spec.name for spec in per_token})
    if student.config.model_type == "lmshrink_bilstm" or not same_tokenizer:
        raise ConfigError(
            f"loss(es) {', '.join(names)} compare per-token states, which needs a "
            "transformer student reading the teacher's tokenizer (--student "
            "layers or narrow)."
        )
    s_shape, t_shape = (
        LayerShape.from_config(student.config),
        LayerShape.from_config(teacher.config),
    )
    pairs = map_layers(cfg.layer_map, s_shape, t_shape)
    compares_attention = any("student_attentions" in spec_inputs(spec) for spec in per_token)
    if compares_attention:
        check_attention_heads(s_shape, t_shape)
    for spec in per_token:
        if spec.name == "value_relation":
            check_relation_heads(s_shape, t_shape, int(spec.params.get("relation_heads", 0)))
    return pairs, compares_attention


def _without_eval_texts(transfer: Any, devs: list[Any]) -> Any:
    """Drop transfer examples that are also dev inputs, so that the student never learns
    the teacher's answers on the texts it is scored on (counted as dev_overlap_dropped)."""
    held_out = {t for split in devs for t in split.texts}
    kept = [t for t in transfer.texts if t not in held_out]
    counts = {
        **transfer.counts,
        "dev_overlap_dropped": len(transfer.texts) - len(kept),
        "total": len(kept),
    }
    return dataclasses.replace(transfer, texts=kept, counts=counts)
