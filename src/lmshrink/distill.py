"""`lmshrink distill`: stage-wise distillation of a teacher into a small student.

The XtremeDistil recipe, as data rather than code: a list of stages, each with the examples
it iterates (the teacher-labelled transfer set, or the gold-labelled rows), its losses and
their weights, its optimiser settings, top-down gradual unfreezing and early stopping on dev.
The default schedule matches the student's representation to the teacher's, then its
logits, then learns from the gold labels. Runs on `accelerate` (one process or many).
A token task (NER) runs the same way word by word: its transfer set is word lists, the
teacher labels each word, and the stages' losses are per-word ones.

This module is the command: its config and `distill()`, which wires the building blocks
(data/, students/, distillation/, reporting/) together in the order of the data flow.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmshrink.config import DataConfig, ResumableRunSettings, option
from lmshrink.data.transfer import TransferConfig
from lmshrink.distillation.labelling import LabellingConfig
from lmshrink.distillation.layer_map import LayerMapConfig
from lmshrink.distillation.stages import StageConfig, default_stages, validate_stages
from lmshrink.distillation.trainer import DevData, Distiller, StageData, main_process_logger
from lmshrink.reporting.progress import LOG_FILE, for_command, log_to
from lmshrink.students import StudentConfig


@dataclasses.dataclass
class DistillConfig(ResumableRunSettings):
    """`lmshrink distill`: train a small student from a teacher and unlabeled data."""

    teacher: str = option("", "fine-tuned teacher folder (from lmshrink finetune).")
    max_grad_norm: float = option(1.0, "gradient clipping norm (0: off).")
    eval_batch_size: int = option(256, "evaluation batch size.")
    measure_speed: bool = option(True, "measure CPU speed against the teacher for the report.")
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


def resolve_config(cfg: DistillConfig, task_kind: Any, mask_token: str | None) -> DistillConfig:
    """The config a run uses, with every choice left to the run made: the XtremeDistil
    stages for the task kind when none are given, and the teacher tokenizer's `mask_token`
    for augmentation when the default one is kept. `cfg` itself is left as it is."""
    from lmshrink.data.augment import with_mask_token

    cfg = copy.deepcopy(cfg)
    if not cfg.stages:
        cfg.stages = default_stages(task_kind)
    cfg.transfer.augment = with_mask_token(cfg.transfer.augment, mask_token)
    return cfg


def _prepare_out(cfg: DistillConfig, out: Path) -> None:
    """A new run needs an empty --out (or --overwrite); --resume needs the same config (both
    resolved: the saved config.yaml is the config its run used)."""
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
        ignore = ("resume", "overwrite", "progress", "quiet")
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


@for_command
def distill(cfg: DistillConfig, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Run every stage and write model/, report.json and report.md into the run folder;
    `callbacks` reach the training loop (`lmshrink.training.callbacks`). What the run prints
    is appended to the run folder's `lmshrink.log`."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    from lmshrink.config import dump_yaml
    from lmshrink.data.splits import Split, load_eval_splits, read_split, resolve_task
    from lmshrink.data.transfer import WordTransferSet, build_transfer_set, without_texts
    from lmshrink.distillation.labelling import Labeller, word_targets
    from lmshrink.distillation.labelling import named_targets as targets
    from lmshrink.distillation.layer_map import check_layer_losses
    from lmshrink.distillation.objective import prepare_for_attention_losses
    from lmshrink.models.loading import (
        count_parameters,
        load_for_eval,
        load_tokenizer,
        resolve_model_source,
        task_head_settings,
    )
    from lmshrink.models.sources import check_custom_settings
    from lmshrink.runs import apply_threads
    from lmshrink.students import STUDENTS, student_settings
    from lmshrink.training.checkpoint import latest_checkpoint
    from lmshrink.training.optim import set_seed

    apply_threads(cfg.threads)
    check_custom_settings(cfg.data, cfg.data, cfg.teacher)  # --dev-file with a named task
    # Everything is resolved and checked before the run folder is touched: the saved
    # config.yaml is exactly the config the run uses.
    task = resolve_task(cfg.data)
    teacher_dir = resolve_model_source(cfg.teacher)
    tokenizer = load_tokenizer(teacher_dir, words=task.kind.token_level)
    cfg = resolve_config(cfg, task.kind, tokenizer.mask_token)  # e.g. <mask> for RoBERTa
    validate_stages(cfg.stages, task.kind)
    family = STUDENTS.get(cfg.student.kind)
    settings = student_settings(cfg.student)

    # Theseus leaves the successor layers of unreplaced groups without gradient in a step.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=cfg.student.kind == "theseus")
    acc = Accelerator(cpu=not torch.cuda.is_available(), kwargs_handlers=[ddp])
    out = Path(cfg.out)
    paths = run_folder_paths(out)
    if acc.is_main_process:
        _prepare_out(cfg, out)
        out.mkdir(parents=True, exist_ok=True)
        dump_yaml(cfg, paths["config"])
        log_to(out / LOG_FILE)  # appended to by a resumed run
    acc.wait_for_everyone()
    log = main_process_logger(acc)

    timings: dict[str, float] = {}
    train = read_split(task, "train", cfg.data).subset(cfg.data.max_train_samples, cfg.seed)
    labeled = train.subset(cfg.data.num_labeled, cfg.seed)
    # dev and its companions (MNLI mismatched), read once: for the stages, for keeping dev
    # texts out of the transfer set, and for the final scores.
    devs = load_eval_splits(task, "dev", cfg.data, cfg.seed)
    dev_split = devs[0]
    _, teacher = load_for_eval(teacher_dir, task)
    progress = acc.is_local_main_process  # shown as a bar, lines or not at all (--quiet)
    transfer = build_transfer_set(cfg.transfer, task, train, cfg.seed, progress=progress)
    # The student never learns the teacher's answers on the texts it is scored on.
    transfer = without_texts(transfer, devs)
    unit = "sentences" if isinstance(transfer, WordTransferSet) else "examples"
    log(f"transfer set: {len(transfer):,} {unit} {transfer.counts}")

    set_seed(cfg.seed)
    built = family.make(
        teacher,
        tokenizer,
        _training_inputs(transfer, labeled),
        task_head_settings(task),
        cfg.data.max_length,
        settings,
    )
    _check_student_kind(built, task, cfg.student.kind)
    student = built.model
    log(
        f"student: {cfg.student.kind}, vocabulary {student.config.vocab_size:,}, "
        f"{count_parameters(student):,} parameters"
    )

    # The student is built, and the layer-wise losses checked against both models, before
    # the teacher labels anything: a recipe that cannot work fails in seconds, not after
    # labelling.
    pairs, compares_attention = check_layer_losses(cfg.layer_map, cfg.stages, built, teacher.config)

    # The teacher labels the transfer set and dev once (each process its own shards).
    labeller = Labeller(
        teacher=teacher,
        tokenizer=tokenizer,
        teacher_dir=teacher_dir,
        cache_root=Path(cfg.labelling.cache_dir or paths["cache"]),
        max_length=cfg.data.max_length,
        settings=cfg.labelling,
        stages=cfg.stages,
        accelerator=acc,
        progress=True,
        log=log,
        words=task.kind.token_level,
    )
    start = time.perf_counter()
    outputs = labeller.teacher_outputs({"transfer": transfer, "dev": dev_split})
    timings["labelling_seconds"] = time.perf_counter() - start

    if isinstance(transfer, WordTransferSet):
        transfer_split: Any = transfer.split(task.name)
    else:
        transfer_split = Split(task.name, "transfer", "", transfer.texts, None)
    transfer_enc = _encode(built, transfer_split, cfg.data.max_length)
    if compares_attention:  # attention maps are compared: both models on eager attention
        prepare_for_attention_losses(student)
        prepare_for_attention_losses(teacher)
    start = time.perf_counter()
    layer_targets = labeller.layer_targets(transfer, transfer_enc.lengths, pairs)
    timings["labelling_seconds"] += time.perf_counter() - start
    # Training reads the encoded transfer set and the teacher's outputs, never its texts
    # again: let them go (~100 bytes a sentence, 200 MB for a transfer set of 2M).
    transfer_counts = transfer.counts
    del transfer, transfer_split
    distiller = Distiller(
        cfg=cfg,
        accelerator=acc,
        paths=paths,
        task=task,
        student=student,
        teacher=teacher.to(acc.device),
        pairs=pairs,
        transfer=StageData(
            transfer_enc,
            targets(outputs.get("transfer")),
            layer_targets,
            word_targets(outputs.get("transfer")),
        ),
        labeled=StageData(_encode(built, labeled, cfg.data.max_length), {}),
        dev=DevData(
            dev_split,
            _encode(built, dev_split, cfg.data.max_length),
            targets(outputs.get("dev")),
            word_targets(outputs.get("dev")),
        ),
        callbacks=callbacks,
    )

    # Resume: stages before the checkpoint's are done; the checkpoint's own stage continues
    # from it (a finished one only gives back its weights, history and RNG state).
    first, resume_from = 0, None
    last = latest_checkpoint(paths["checkpoints"]) if cfg.resume else None
    if last is not None:
        from lmshrink.distillation.trainer import checkpoint_stage

        first, resume_from = checkpoint_stage(last), last
        log(f"resuming from {last.name}")

    start = time.perf_counter()
    for index in range(first, len(cfg.stages)):
        distiller.run_stage(index, cfg.stages[index], resume_from if index == first else None)
    timings["training_seconds"] = time.perf_counter() - start

    from lmshrink.reporting.run_report import FinishedRun, finish_run

    finished = FinishedRun(
        cfg=cfg,
        paths=paths,
        task=task,
        teacher=teacher,
        teacher_tokenizer=tokenizer,
        teacher_dir=teacher_dir,
        student=built,
        transfer_counts=transfer_counts,
        labeled_examples=len(labeled),
        devs=devs,
        history=distiller.history,
        timings=timings,
    )
    return finish_run(finished, acc)


def _training_inputs(transfer: Any, labeled: Any) -> Sequence[Any]:
    """What student builders read of the training examples, the transfer set's then the
    labeled rows': texts (tuples of 1 or 2 fields), or a token task's sentences (sequences
    of words), read in place (a transfer set of millions is not copied)."""
    from lmshrink.data.text_store import Concat

    words = getattr(transfer, "words", None)
    if words is not None:
        return Concat(words, labeled.words)
    return Concat(transfer.texts, labeled.texts)


def _encode(student: Any, split: Any, max_length: int) -> Any:
    """`split` encoded as `student` (a `Student`) reads it: with its tokenizer and, for a
    token model that reads word shapes, `word_shape_ids`."""
    from lmshrink.data.batching import encode
    from lmshrink.students.common import reads_word_shapes

    return encode(
        student.tokenizer, split, max_length, word_shapes=reads_word_shapes(student.model)
    )


def _check_student_kind(student: Any, task: Any, kind: str) -> None:
    """A token task needs a student that tags each token, a sentence task one that labels
    the sentence: a `ModelError` naming the family otherwise."""
    from lmshrink.errors import ModelError
    from lmshrink.students.common import is_token_classifier

    token = is_token_classifier(student.final_model)
    if token != task.kind.token_level:
        want = "a token classifier" if task.kind.token_level else "a sequence classifier"
        raise ModelError(
            f"the {kind} student family built a {type(student.final_model).__name__}, but task "
            f"{task.name} needs {want}; choose a student family that supports it (layers, "
            "narrow, pretrained)."
        )
