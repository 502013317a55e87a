"""The stage loop of a distillation run: a student, its objective per stage, gradual
unfreezing, evaluation on dev, early stopping, best weights and resumable checkpoints."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from lmshrink.distillation.stages import (
    StageConfig,
    epoch_batches,
    frozen_params,
    stage_steps,
    unfreeze_plan,
)
from lmshrink.errors import TrainingError


@dataclasses.dataclass
class StageData:
    """What a stage iterates: encoded inputs and, per example, its targets."""

    enc: Any  # lmshrink.data.splits.Encoded
    targets: dict[str, Any]  # name -> tensor [N, ...] indexed like enc
    layers: Any = (
        None  # lmshrink.distillation.layer_cache.LayerTargets: cached per-token teacher targets
    )


class Distiller:
    """One run: the prepared data, teacher outputs, student, and the stage loop."""

    def __init__(
        self,
        cfg: Any,  # lmshrink.distill.DistillConfig
        accelerator: Any,
        paths: dict[str, Path],
        task: Any,
        student: Any,
        transfer: StageData,
        labeled: StageData,
        dev: Any,
        dev_targets: dict[str, Any],
        teacher: Any,
        pairs: list[tuple[int, int]] | None,
    ) -> None:
        self.cfg, self.acc, self.paths, self.task = cfg, accelerator, paths, task
        self.student, self.teacher, self.pairs = student, teacher, pairs
        self.teacher_dim = teacher.config.hidden_size  # of its pooled representation
        self.data = {"transfer": transfer, "labeled": labeled}
        self.dev, self.dev_targets = dev, dev_targets
        self.history: list[dict[str, Any]] = []

    # -- evaluation ---------------------------------------------------------------------

    def best_task_score(self) -> float:
        """The best dev task score reached by any stage so far (-inf before any)."""
        scores = [h["dev"] for h in self.history if h["metric"] == "score"]
        return max(scores, default=-math.inf)

    def dev_score(self, objective: Any, stage: StageConfig) -> float:
        """Higher is better: the dev task score, or minus the dev loss for stages that do
        not train the classifier (representation matching)."""
        import torch

        from lmshrink.evaluate import split_metrics
        from lmshrink.measure import metrics
        from lmshrink.training.inference import predict

        if "student_logits" in objective.needs:
            outputs = predict(self.student, self.dev.enc, self.cfg.eval_batch_size)
            return metrics.task_score(split_metrics(self.task, outputs, self.dev.split))
        from lmshrink.data.batching import bucketed_batches, collate

        total, count = 0.0, 0
        objective.eval()
        with torch.inference_mode():
            for idx in bucketed_batches(self.dev.enc.lengths, self.cfg.eval_batch_size, None):
                batch = collate(self.dev.enc, idx)
                batch.pop("labels", None)
                targets = {k: v[idx] for k, v in self.dev_targets.items()}
                loss, _ = objective(batch, targets)
                total, count = total + loss.item() * len(idx), count + len(idx)
        objective.train()
        return -total / count

    # -- one stage ----------------------------------------------------------------------

    def run_stage(self, index: int, stage: StageConfig, resume: Path | None) -> None:
        import torch
        from tqdm.auto import tqdm

        from lmshrink.data.batching import collate
        from lmshrink.distillation.objective import Objective
        from lmshrink.training.checkpoint import load_checkpoint, save_checkpoint, save_weights
        from lmshrink.training.optim import build_optimizer

        acc, cfg = self.acc, self.cfg
        data = self.data[stage.data]
        objective = Objective(
            self.student, stage.losses, self.teacher, self.teacher_dim, self.pairs
        )
        per_epoch, total = stage_steps(len(data.enc), stage, acc.num_processes)
        optimizer, scheduler = build_optimizer(objective, _as_train_config(stage), total)
        plan = unfreeze_plan(self.student, stage, "student_logits" in objective.needs)
        scores_task = "student_logits" in objective.needs
        state = {"stage": index, "step": 0, "best": -math.inf, "bad_evals": 0, "done": False}
        best_path = self.paths["best"]
        if scores_task and resume is None:
            # A stage must beat the best dev score of earlier stages, or its start weights
            # (the earlier stages' best) are kept: a short gold-label stage cannot undo them.
            state["best"] = self.best_task_score()
            if state["best"] > -math.inf and acc.is_main_process:
                save_weights(best_path, objective.state_dict())
        if resume is not None:
            weights, optim, state = load_checkpoint(resume)
            self.history = state.pop("history")
            objective.load_state_dict(weights)
            optimizer.load_state_dict(optim["optimizer"])
            scheduler.load_state_dict(optim["scheduler"])
            torch.set_rng_state(optim["torch_rng"])
        wrapped, optimizer = acc.prepare(objective, optimizer)

        def checkpoint() -> None:
            if acc.is_main_process:
                save_checkpoint(
                    self.paths["checkpoints"],
                    f"{index}-{state['step']:07d}",
                    objective.state_dict(),
                    optimizer,
                    scheduler,
                    {**state, "history": self.history},
                )
            acc.wait_for_everyone()

        bar = tqdm(
            total=total,
            initial=state["step"],
            desc=f"stage {index + 1} {stage.name}",
            disable=not (cfg.progress and acc.is_local_main_process),
            mininterval=2.0,
        )
        wrapped.train()
        while state["step"] < total and not state["done"]:
            epoch, offset = divmod(state["step"], per_epoch)
            frozen = frozen_params(plan, stage, epoch)
            steps = epoch_batches(
                data.enc.lengths, stage, cfg.seed, index, epoch, acc.num_processes
            )
            for step_batches in steps[offset:per_epoch]:
                idx = step_batches[acc.process_index]
                batch = {k: v.to(acc.device) for k, v in collate(data.enc, idx).items()}
                targets = {k: v[idx].to(acc.device) for k, v in data.targets.items()}
                if data.layers is not None:
                    targets.update(data.layers.take(idx, batch["input_ids"].shape[1], acc.device))
                if "labels" in batch:  # gold labels are a loss target, not a model input
                    targets["labels"] = batch.pop("labels")
                loss, parts = wrapped(batch, targets)
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"stage {stage.name!r}: loss became {loss.item()} at step "
                        f"{state['step'] + 1}; the last good checkpoint is kept in "
                        f"{self.paths['checkpoints']}; lower the stage's lr and rerun with "
                        "--resume, or check the data."
                    )
                acc.backward(loss)
                for p in frozen:  # frozen groups: drop their gradient so AdamW skips them
                    p.grad = None
                if cfg.max_grad_norm > 0:
                    acc.clip_grad_norm_(objective.parameters(), cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state["step"] += 1
                bar.update(1)
                bar.set_postfix({k: f"{v.item():.4f}" for k, v in parts.items()}, refresh=False)
                end_of_epoch = state["step"] % per_epoch == 0 or state["step"] == total
                if end_of_epoch or (stage.eval_every and state["step"] % stage.eval_every == 0):
                    self._evaluate(objective, stage, index, state, best_path)
                    if state["done"] or state["step"] == total:
                        break
                if state["step"] % cfg.checkpoint_every == 0:
                    checkpoint()
                _maybe_kill_for_test(index, state["step"])
        bar.close()
        if best_path.is_file():  # end the stage with its best weights
            from safetensors.torch import load_file

            objective.load_state_dict(load_file(str(best_path)))
        state["done"] = True
        checkpoint()
        if acc.is_main_process:
            best_path.unlink(missing_ok=True)

    def _evaluate(
        self, objective: Any, stage: StageConfig, index: int, state: dict[str, Any], best_path: Path
    ) -> None:
        from lmshrink.training.checkpoint import save_weights

        score = self.dev_score(objective, stage)
        improved = score > state["best"]
        metric = "score" if "student_logits" in objective.needs else "minus_loss"
        self.history.append(
            {
                "stage": stage.name,
                "step": state["step"],
                "metric": metric,
                "dev": score,
                "improved": improved,
            }
        )
        if improved:
            state["best"], state["bad_evals"] = score, 0
            if self.acc.is_main_process:
                save_weights(best_path, objective.state_dict())
            self.acc.wait_for_everyone()
        else:
            state["bad_evals"] += 1
            if stage.patience and state["bad_evals"] >= stage.patience:
                state["done"] = True
        if self.acc.is_local_main_process:  # one line per evaluation, also in logs
            label = "dev score" if "student_logits" in objective.needs else "dev -loss"
            print(
                f"  {stage.name} step {state['step']}: {label} {score:.4f}"
                + (" (best)" if improved else ""),
                flush=True,
            )


def _as_train_config(stage: StageConfig) -> Any:
    from lmshrink.config import TrainConfig

    return TrainConfig(
        lr=stage.lr, weight_decay=stage.weight_decay, warmup_ratio=stage.warmup_ratio
    )


def _maybe_kill_for_test(stage_index: int, step: int) -> None:
    """Tests kill a run hard (no cleanup, like SIGKILL) at LMSHRINK_TEST_KILL_AT=STAGE:STEP
    to check that --resume gives the same result as an uninterrupted run."""
    import os

    if os.environ.get("LMSHRINK_TEST_KILL_AT") == f"{stage_index}:{step}":
        os._exit(137)


@dataclasses.dataclass
class DevData:
    split: Any  # lmshrink.data.splits.Split
    enc: Any  # lmshrink.data.splits.Encoded


def main_process_logger(acc: Any) -> Any:
    def log(message: str) -> None:
        if acc.is_local_main_process:
            print(message, flush=True)

    return log
