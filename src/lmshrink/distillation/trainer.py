"""The stages of a distillation run on the one training loop (`lmshrink.training.loop`):
per stage, the student and its weighted losses as one `Objective`, the stage's batches (one
per process), gradual unfreezing, dev evaluation, early stopping, best weights and
resumable checkpoints (`checkpoints/step-{stage}-{step}`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmshrink.config import OptimSettings
from lmshrink.distillation.stages import (
    StageConfig,
    epoch_batches,
    frozen_params,
    stage_steps,
    unfreeze_plan,
)
from lmshrink.training.callbacks import Callback


@dataclasses.dataclass
class StageData:
    """What a stage iterates: encoded inputs and, per example, its targets."""

    enc: Any  # lmshrink.data.batching.Encoded
    targets: dict[str, Any]  # name -> tensor [N, ...] indexed like enc
    # lmshrink.distillation.layer_cache.LayerTargets: cached per-token teacher targets
    layers: Any = None
    # lmshrink.distillation.labelling.WordTargets: a token task's cached per-word targets
    words: Any = None


@dataclasses.dataclass
class DevData:
    """The dev split the stages are scored on, and the teacher's targets on it (for stages
    scored by their loss)."""

    split: Any  # lmshrink.data.splits.Split (a token task: data.ner.TokenSplit)
    enc: Any  # lmshrink.data.batching.Encoded
    targets: dict[str, Any] = dataclasses.field(default_factory=dict)
    words: Any = None  # lmshrink.distillation.labelling.WordTargets (token tasks)


@dataclasses.dataclass(kw_only=True)
class Distiller:
    """What a distill run hands to the stage loop, and the history its stages write."""

    cfg: Any  # lmshrink.distill.DistillConfig: seed, stages, loop settings
    accelerator: Any
    paths: dict[str, Path]  # "checkpoints", "best" (see distill.run_folder_paths)
    task: Any
    student: Any
    teacher: Any
    pairs: list[tuple[int, int]] | None  # layer pairs of layer-wise losses
    transfer: StageData
    labeled: StageData
    dev: DevData
    callbacks: Sequence[Callback] = ()
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def data(self) -> dict[str, StageData]:
        """The stages' data by `StageConfig.data` name."""
        return {"transfer": self.transfer, "labeled": self.labeled}

    # -- evaluation ---------------------------------------------------------------------

    def best_task_score(self) -> float:
        """The best dev task score reached by any stage so far (-inf before any)."""
        scores = [h["dev"] for h in self.history if h["metric"] == "score"]
        return max(scores, default=-math.inf)

    def dev_score(self, objective: Any) -> float:
        """Higher is better: the dev task score (a token task's: entity F1 of the per-word
        predictions), or minus the dev loss for stages that do not train the classifier
        (representation matching)."""
        import torch

        from lmshrink.measure import metrics
        from lmshrink.measure.scoring import outside_id, split_metrics
        from lmshrink.training.inference import eval_batches, predict, predict_words

        shown = self.accelerator.is_local_main_process  # a long dev pass shows progress
        if scores_task(objective):
            size = self.cfg.eval_batch_size
            if self.task.kind.token_level:  # a word without sub-tokens is predicted O
                outside = outside_id(self.task)
                outputs = predict_words(
                    self.student, self.dev.enc, size, shown, "eval dev", outside
                )
            else:
                outputs = predict(self.student, self.dev.enc, size, shown, "eval dev")
            return metrics.task_score(split_metrics(self.task, outputs, self.dev.split))
        device = self.accelerator.device
        dev = StageData(self.dev.enc, self.dev.targets, words=self.dev.words)
        total, count = 0.0, 0
        objective.eval()
        with torch.inference_mode():
            for idx, batch, _ in eval_batches(
                self.dev.enc,
                self.cfg.eval_batch_size,
                device=device,
                progress=shown,
                desc="eval dev",
            ):
                targets = _targets(dev, idx, batch, device)
                loss, _ = objective(batch, targets)
                total, count = total + loss.item() * len(idx), count + len(idx)
        objective.train()
        return -total / count

    # -- one stage ----------------------------------------------------------------------

    def run_stage(self, index: int, stage: StageConfig, resume: Path | None) -> None:
        """Train stage `index` (or continue it from the checkpoint `resume`); the student
        ends with the stage's best weights."""
        from lmshrink.distillation.objective import Objective
        from lmshrink.training.loop import Phase, run

        acc, cfg = self.accelerator, self.cfg
        data = self.data[stage.data]
        teacher_dim = self.teacher.config.hidden_size  # of its pooled representation
        objective = Objective(self.student, stage.losses, self.teacher, teacher_dim, self.pairs)
        per_epoch, total = stage_steps(len(data.enc), stage, acc.num_processes)
        scores = scores_task(objective)
        plan = unfreeze_plan(self.student, stage, scores)
        phase = Phase(
            name=f"stage {index + 1} {stage.name}",
            model=objective,
            step=lambda wrapped, idx: wrapped(*self._inputs(data, idx)),
            batches=lambda epoch: epoch_batches(
                data.enc.lengths, stage, cfg.seed, index, epoch, acc.num_processes
            ),
            steps_per_epoch=per_epoch,
            total_steps=total,
            optim=OptimSettings(
                lr=stage.lr, weight_decay=stage.weight_decay, warmup_ratio=stage.warmup_ratio
            ),
            max_grad_norm=cfg.max_grad_norm,
            evaluate=lambda state: self.dev_score(objective),
            eval_every=stage.eval_every,
            patience=stage.patience,
            frozen=lambda epoch: frozen_params(plan, stage, epoch),
            checkpoints=self.paths["checkpoints"],
            checkpoint_every=cfg.checkpoint_every,
            tag=str(index),
            best_path=self.paths["best"],
            # A stage must beat the best dev score of earlier stages, or its start weights
            # (the earlier stages' best) are kept: a short gold-label stage cannot undo them.
            initial_best=self.best_task_score() if scores else -math.inf,
            meta={"stage": index, "history": self.history},
            progress=True,  # on the main process: a bar, lines or none (reporting.progress)
            accelerator=acc,
            nan_hint="lower the stage's lr and start again, or check the data",
        )
        log = _StageLog(stage.name, scores, acc.is_local_main_process)
        state = run(phase, [log, *self.callbacks], resume)
        self.history = state.meta["history"]

    def _inputs(self, data: StageData, idx: list[int]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(model inputs, loss targets) of the examples `idx`, on this process's device."""
        from lmshrink.data.batching import collate

        device = self.accelerator.device
        batch = {k: v.to(device) for k, v in collate(data.enc, idx).items()}
        labels = batch.pop("labels", None)  # gold labels are a loss target, not a model input
        targets = _targets(data, idx, batch, device)
        if labels is not None:
            targets["labels"] = labels
        return batch, targets


def scores_task(objective: Any) -> bool:
    """Whether a stage's losses train the classifier (they read the student's logits, per
    example or per word): such a stage is scored on dev by the task's metric."""
    return bool({"student_logits", "student_word_logits"} & objective.needs)


def _targets(data: StageData, idx: list[int], batch: dict[str, Any], device: Any) -> dict[str, Any]:
    """The loss targets of the examples `idx` (their model inputs `batch`): cached teacher
    outputs, per-token layer targets, and for a token task the word positions `word_index`
    [B, W] and `word_mask` [B, W] (real words the student and, with cached targets, the
    teacher both kept) with the teacher's per-word targets."""
    import torch

    targets = {k: v[idx].to(device) for k, v in data.targets.items()}
    if data.layers is not None:
        targets.update(data.layers.take(idx, batch["input_ids"].shape[1], device))
    starts = data.enc.word_starts
    if starts is not None:
        width = max(1, max(len(starts[i]) for i in idx))
        index = torch.zeros(len(idx), width, dtype=torch.long)
        mask = torch.zeros(len(idx), width, dtype=torch.bool)
        for row, i in enumerate(idx):
            index[row, : len(starts[i])] = torch.tensor(starts[i], dtype=torch.long)
            mask[row, : len(starts[i])] = True
        if data.words is not None:
            words = data.words.take(idx, width, device)
            mask = mask.to(device) & words.pop("teacher_word_mask")
            targets.update(words)
        targets["word_index"], targets["word_mask"] = index.to(device), mask.to(device)
    return targets


class _StageLog(Callback):
    """Records each evaluation in the run's history (kept in the checkpoints) and prints it."""

    def __init__(self, stage: str, scores_task: bool, prints: bool) -> None:
        self.stage, self.scores_task, self.prints = stage, scores_task, prints

    def on_evaluate(self, phase: Any, state: Any, score: float, improved: bool) -> None:
        metric = "score" if self.scores_task else "minus_loss"
        state.meta["history"].append(
            {
                "stage": self.stage,
                "step": state.step,
                "metric": metric,
                "dev": score,
                "improved": improved,
            }
        )
        if self.prints:  # one line per evaluation, also in logs
            from lmshrink.reporting.progress import info

            label = "dev score" if self.scores_task else "dev -loss"
            info(
                f"  {self.stage} step {state.step}: {label} {score:.4f}"
                + (" (best)" if improved else "")
            )


def checkpoint_stage(path: Path) -> int:
    """The stage a checkpoint folder of the stage loop belongs to."""
    from lmshrink.training.checkpoint import read_state

    return int(read_state(path)["meta"]["stage"])


def main_process_logger(acc: Any) -> Any:
    """Info lines of the main process (`reporting.progress.info`: none with --quiet)."""
    from lmshrink.reporting.progress import info

    def log(message: str) -> None:
        if acc.is_local_main_process:
            info(message)

    return log
