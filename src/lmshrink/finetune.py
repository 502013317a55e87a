"""`lmshrink finetune`: an encoder plus a task head, trained on the task's gold labels.

The output folder is a stock Hugging Face model folder (weights, config with
`id2label`/`label2id`, tokenizer) plus `lmshrink.json` (task, metric, data fingerprints,
dev history), `config.yaml` (the resolved config) and `lmshrink.log` (what the run printed,
with its progress lines). The weights of the evaluation with the best dev score are the ones
saved.

Training runs on the one loop (`lmshrink.training.loop`): the data order of epoch e is the
(e+1)-th draw of `random.Random(seed)` over length-bucketed batches; dev is scored at the
end of each epoch (and every `train.eval_every` steps). **Resuming**: the run keeps its
resumable state in a work folder beside `--out`, `<out>.work/` (`config.yaml`,
`checkpoints/` written every `checkpoint_every` steps and at the end, the best weights so
far); `--out` itself is written only once training is over, through a staging folder
renamed into place, so a failed or killed run never leaves a half-written model. The work
folder goes once the model is in place, or when a failed run leaves no checkpoint in it;
`--resume` continues from its last checkpoint to the same weights as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from lmshrink import __version__
from lmshrink.config import (
    DataConfig,
    ResumableRunSettings,
    TrainConfig,
    dump_yaml,
    option,
    to_dict,
)
from lmshrink.data.batching import collate, encode
from lmshrink.data.splits import load_eval_splits, read_split, resolve_task
from lmshrink.measure import metrics
from lmshrink.measure.scoring import score_model
from lmshrink.models.loading import METADATA_FILE, count_parameters, load_for_training
from lmshrink.models.sources import check_custom_settings
from lmshrink.reporting.progress import LOG_FILE, for_command, info, log_to, move_log
from lmshrink.runs import apply_threads, staged_output
from lmshrink.training.callbacks import Callback
from lmshrink.training.checkpoint import end_work, save_work_config, start_work
from lmshrink.training.loop import LoopState, Phase, ShuffleStream, run
from lmshrink.training.optim import set_seed


@dataclasses.dataclass
class FinetuneConfig(ResumableRunSettings):
    """`lmshrink finetune`: train a task head (and the encoder) on a task."""

    # Keys of earlier versions, and where their setting lives now.
    RENAMED: ClassVar[dict[str, str]] = {
        "train.seed": "seed",
        "train.progress": "progress",
    }

    model: str = option("", "encoder to fine-tune: hub id, local folder, or packaged:minilm.")
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)


@for_command
def finetune(cfg: FinetuneConfig, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Fine-tune `cfg.model` on `cfg.data.task`; returns the metadata written to the folder.
    `callbacks` reach the training loop (`lmshrink.training.callbacks`). What it prints is
    logged to `lmshrink.log`, in the work folder while it runs, then in `--out`."""
    apply_threads(cfg.threads)
    check_custom_settings(cfg.data, cfg.data, cfg.model)  # --dev-file with --task sst2: an error
    work, resume_from = start_work(cfg, FinetuneConfig)
    out = Path(cfg.out).expanduser()
    task = resolve_task(cfg.data)
    tc = cfg.train
    train = read_split(task, "train", cfg.data).subset(cfg.data.max_train_samples, cfg.seed)
    # Low-resource mode: the same seed picks the same labeled rows as `lmshrink distill`.
    train = train.subset(cfg.data.num_labeled, cfg.seed)
    devs = load_eval_splits(task, "dev", cfg.data, cfg.seed)

    set_seed(cfg.seed)
    tokenizer, model = load_for_training(cfg.model, task)
    enc = encode(tokenizer, train, cfg.data.max_length)
    order = ShuffleStream(enc.lengths, tc.batch_size, cfg.seed)
    per_epoch = order.per_epoch()

    def evaluate(state: LoopState) -> float:
        scores = score_model(
            model, tokenizer, task, devs, cfg.data.max_length, tc.eval_batch_size, progress=True
        )
        entry = {
            "step": state.step,
            "epoch": round(state.step / per_epoch, 3),
            "loss": state.loss,
            "dev": scores,
            "score": metrics.task_score(scores),
            "seconds": round(state.seconds, 1),
        }
        state.meta["history"].append(entry)
        info(
            f"step {state.step} (epoch {entry['epoch']}): dev "
            + ", ".join(f"{k} {100 * v:.2f}" for k, v in scores.items())
        )
        return entry["score"]

    phase = Phase(
        name=f"finetune {task.name}",
        model=model,
        step=lambda m, indices: _gold_loss(m, collate(enc, indices)),
        batches=order.epochs(),
        steps_per_epoch=per_epoch,
        total_steps=max(1, math.ceil(tc.epochs * per_epoch)),
        optim=tc,
        max_grad_norm=tc.max_grad_norm,
        evaluate=evaluate,
        eval_every=tc.eval_every,
        checkpoints=work / "checkpoints",
        checkpoint_every=cfg.checkpoint_every,
        best_path=work / "best.safetensors",
        meta={"history": []},
        progress=True,  # a bar, or lines (--no-progress, a file or pipe), or none (--quiet)
        nan_hint="lower --lr or check the labels",
    )
    save_work_config(cfg, work)
    log_to(work / LOG_FILE)  # moves into --out with the model
    try:
        state = run(phase, callbacks, resume_from)
    except BaseException as error:
        end_work(work, error)
        raise
    history = state.meta["history"]
    best, top = history[-1], -math.inf
    for entry in history:  # the first of the best scores: the weights the loop kept
        if entry["score"] > top:
            best, top = entry, entry["score"]
    meta = {
        "lmshrink_version": __version__,
        "kind": "teacher",
        "task": task.name,
        "metrics": list(task.metrics),
        "labels": list(task.labels),
        "base_model": cfg.model,
        "dev": best["dev"],
        "score": best["score"],
        "best_step": best["step"],
        "best_epoch": best["epoch"],
        "history": history,
        "parameters": count_parameters(model),
        "train_examples": len(train),
        "data_fingerprint": {
            "train": train.fingerprint(),
            **{s.name: s.fingerprint() for s in devs},
        },
        "train_seconds": round(state.seconds, 1),
        "config": to_dict(cfg),
    }
    with staged_output(out) as stage:
        model.save_pretrained(stage)
        tokenizer.save_pretrained(stage)
        dump_yaml(cfg, stage / "config.yaml")
        (stage / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        move_log(work, stage)
    end_work(work)
    return meta


def _gold_loss(model: Any, batch: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The model's own loss on the gold labels (cross-entropy, or MSE for regression)."""
    loss = model(**batch).loss
    return loss, {"loss": loss.detach()}
