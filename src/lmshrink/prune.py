"""`lmshrink prune`: structured pruning of a BERT-family classifier or NER tagger (BERT,
MiniLM, RoBERTa, XLM-R), with distillation recovery. The method (importance, what is kept,
recovery) is in `lmshrink.compress.pruning`; this module is the command: its config and its
schedule.

**Schedule.** `steps` steps lower the kept share linearly from 1 to `target_params`; each
step re-estimates importance on the current model, prunes, then recovers for
`recovery_steps` steps by distillation from the unpruned model (on the training loop,
`lmshrink.training.loop`, with the `train` block's optimiser settings; its data order is
drawn from `random.Random(seed)`, one draw per pass, continuing across the steps). The
recovery after the last step is the final recovery phase (`final_recovery_steps`, when
set). With `target_speedup`, each step instead shrinks the share by
`(1/target)^(1/steps)`, and the speed ratio at batch 32 is measured right after pruning, as
for the report (speed depends on the shapes only, not on the weights); the step that reaches
the target (or the `3 * steps`-th, or one leaving nothing prunable) is the last. Speed ratios
are against the model as loaded (its own stock class, e.g. `BertForSequenceClassification`),
timed interleaved in one process.

**Encoder sparsity** (in the report): the share of encoder parameters removed (see
`SPARSITY_DEFINITION`); `target_params` counts the same parameters.

**Resuming.** The run keeps its resumable state beside `--out`, in `<out>.work/`
(`config.yaml`, and the recovery phases' checkpoints, `checkpoints/step-{pruning step}-
{recovery step}`, each holding the pruned model, whose shape its `heads_per_layer` and
`intermediate_per_layer` give, and the steps finished so far). `--resume` continues inside
the recovery phase of the last checkpoint, or after the last finished pruning step, to the
same model as an uninterrupted run (the speed measured before a kill is kept, not measured
again). `--out` is written only at the end, through a staging folder renamed into place.

Output folder (`--out`): a stock model folder (weights, config, tokenizer), `lmshrink.json`,
`config.yaml`, `prune.json` (the report) and `lmshrink.log` (what the run printed).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmshrink import __version__
from lmshrink.compress.pruning import (
    SPARSITY_DEFINITION,
    check_prunable,
    choose_keep,
    compute_importance,
    encoder_parameters,
    from_bert,
    prune_to,
    recovery_step,
    unit_costs,
    with_shape,
)
from lmshrink.config import (
    DataConfig,
    ResumableRunSettings,
    SpeedSettings,
    TrainConfig,
    dump_yaml,
    option,
    to_dict,
)
from lmshrink.data.batching import encode
from lmshrink.data.splits import read_split
from lmshrink.errors import ConfigError
from lmshrink.measure import metrics
from lmshrink.models.loading import METADATA_FILE, count_parameters
from lmshrink.reporting.progress import LOG_FILE, for_command, info, log_to, move_log
from lmshrink.runs import apply_threads, staged_output
from lmshrink.training.callbacks import Callback, RecentLosses
from lmshrink.training.checkpoint import end_work, read_state, save_work_config, start_work
from lmshrink.training.loop import Phase, ShuffleStream, run

__all__ = ["REPORT_FILE", "SPARSITY_DEFINITION", "PruneConfig", "prune"]

REPORT_FILE = "prune.json"


@dataclasses.dataclass
class PruneConfig(SpeedSettings, ResumableRunSettings):
    """`lmshrink prune`: remove attention heads and FFN neurons, recovering by distillation."""

    # Keys of earlier versions, and where their setting lives now.
    RENAMED: typing.ClassVar[dict[str, str]] = {
        "lr": "train.lr",
        "batch_size": "train.batch_size",
        "eval_batch_size": "train.eval_batch_size",
    }

    model: str = option(
        "", "fine-tuned BERT-family model folder (or run folder holding model/).", positional=True
    )
    target_params: float = option(
        0.0, "share of encoder parameters to keep, e.g. 0.4 (0: use --target-speedup)."
    )
    target_speedup: float = option(
        0.0, "speed ratio vs the unpruned model at batch 32 to reach, e.g. 3 (0: off)."
    )
    steps: int = option(3, "pruning steps (each: importance, prune, recover).")
    recovery_steps: int = option(200, "distillation steps after each pruning step.")
    final_recovery_steps: int = option(
        0, "distillation steps after the last pruning step (0: as --recovery-steps)."
    )
    hidden_weight: float = option(1.0, "weight of the hidden-state MSE beside the logit loss.")
    importance_examples: int = option(512, "training examples used to estimate importance.")
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    # Recovery's optimiser (AdamW, lr 5e-5, weight decay 0.01, warmup 0.1, clipping 1.0),
    # batch size (also of importance estimation) and evaluation batch size; recovery_steps,
    # not epochs, set its length, and it is not evaluated on the way (eval_every unused).
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)


def _check_targets(cfg: PruneConfig) -> None:
    if (cfg.target_params > 0) == (cfg.target_speedup > 0):
        raise ConfigError(
            "give exactly one target: --target-params (share of encoder parameters to keep, "
            "e.g. 0.4) or --target-speedup (e.g. 3)."
        )
    if cfg.target_params and not 0 < cfg.target_params <= 1:
        raise ConfigError(f"--target-params must be in (0, 1], got {cfg.target_params}.")
    if cfg.target_speedup and cfg.target_speedup <= 1:
        raise ConfigError(f"--target-speedup must be above 1, got {cfg.target_speedup}.")
    if cfg.steps < 1:
        raise ConfigError(f"--steps must be at least 1, got {cfg.steps}.")
    unused = [k for k in ("epochs", "eval_every") if getattr(cfg.train, k) != _TRAIN_DEFAULTS[k]]
    if unused:
        raise ConfigError(
            f"{', '.join('train.' + k for k in unused)}: not used by prune (--recovery-steps "
            "sets the length of each recovery, which is not evaluated on the way); leave it "
            "unset."
        )


_TRAIN_DEFAULTS = dataclasses.asdict(TrainConfig())


def _share(cfg: PruneConfig, step: int) -> float:
    """The share of encoder parameters pruning step `step` (1-based) keeps at most."""
    if cfg.target_params:
        return 1.0 - (1.0 - cfg.target_params) * step / cfg.steps
    share = 1.0
    for _ in range(step):  # one multiplication per step, as the steps have always done it
        share *= (1.0 / cfg.target_speedup) ** (1.0 / cfg.steps)
    return share


def _prune_step(
    cfg: PruneConfig,
    step: int,
    model: Any,
    enc: Any,
    limits: tuple[int, int, int],
    speedup: Any,
) -> tuple[Any, dict[str, Any]]:
    """Pruning step `step` of `model`: importance, the smaller model, and (speed target) its
    measured speed ratio. Returns the smaller model and what its recovery phase keeps in its
    checkpoints: its shape, the step's report entry so far, whether it is the last step."""
    total, unprunable, max_steps = limits
    share = _share(cfg, step)
    budget = math.floor(share * total)
    if cfg.target_speedup:
        budget = max(budget, unprunable)
    importance = compute_importance(
        model, enc, cfg.train.batch_size, cfg.importance_examples, progress=True
    )
    heads, neurons = choose_keep(model, importance, budget)
    smaller = prune_to(model, heads, neurons)
    entry: dict[str, Any] = {"step": step, "target_share": round(share, 4)}
    if cfg.target_speedup:
        entry["speedup_32"] = speedup(smaller, (32,))["ratio"]["pruned"]["32"]
    reached = cfg.target_speedup > 0 and entry["speedup_32"] >= cfg.target_speedup
    # Nothing left to remove: an unreachable speed target ends here.
    last = reached or step == max_steps or encoder_parameters(smaller) <= unprunable
    return smaller, {
        "prune_step": step,
        "heads_per_layer": list(smaller.config.heads_per_layer),
        "intermediate_per_layer": list(smaller.config.intermediate_per_layer),
        "entry": entry,
        "layer_importance": importance.layers(),
        "last": last,
    }


@for_command
def prune(cfg: PruneConfig, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Prune `cfg.model` towards the target with recovery; save it to `cfg.out` with the
    report (also returned). `callbacks` reach the recovery phases' training loop."""
    from lmshrink.measure.scoring import score_model
    from lmshrink.measure.speed import measure_speed
    from lmshrink.models.loading import size_on_disk
    from lmshrink.models.sources import read_model
    from lmshrink.training.optim import set_seed

    apply_threads(cfg.threads)
    _check_targets(cfg)
    work, resume_from = start_work(cfg, PruneConfig)
    out = Path(cfg.out).expanduser()
    source = read_model(cfg.model, cfg.data, cfg.seed)
    task, tokenizer, loaded, data_cfg = source.task, source.tokenizer, source.model, source.data
    check_prunable(loaded, source.folder)
    set_seed(cfg.seed)
    reference = from_bert(loaded).eval()
    for param in reference.parameters():
        param.requires_grad_(False)
    tc = cfg.train
    train = read_split(task, "train", data_cfg).subset(data_cfg.max_train_samples, cfg.seed)
    enc = encode(tokenizer, train, data_cfg.max_length)
    order = ShuffleStream(enc.lengths, tc.batch_size, cfg.seed)
    log = info  # on stdout unless --quiet, and in lmshrink.log

    def speedup(model: Any, batch_sizes: tuple[int, ...] = (1, 32)) -> dict[str, Any]:
        limit = {1: min(cfg.speed_examples, 64 * cfg.rounds), 32: cfg.speed_examples}
        pair = {"unpruned": (loaded, source.enc), "pruned": (model, source.enc)}
        return measure_speed(pair, batch_sizes=batch_sizes, limit=limit, rounds=cfg.rounds)

    total = encoder_parameters(reference)
    # What pruning cannot remove (LayerNorms, output biases): a speed target never asks less.
    unprunable = reference.config.num_hidden_layers * unit_costs(reference.config)[2]
    max_steps = cfg.steps if cfg.target_params else 3 * cfg.steps
    student = copy.deepcopy(reference)
    for param in student.parameters():
        param.requires_grad_(True)
    history: list[dict[str, Any]] = []
    first, meta, elapsed = 1, None, 0.0
    if resume_from is not None:  # the pruned model of the checkpoint's step, and its step
        saved = read_state(resume_from)
        meta, elapsed = saved["meta"], saved["meta"]["clock"] + saved["seconds"]
        student = with_shape(reference, meta["heads_per_layer"], meta["intermediate_per_layer"])
        first = meta["prune_step"]
        log(f"resuming from {resume_from.name}")
    start = time.perf_counter() - elapsed
    per_epoch = order.per_epoch()
    save_work_config(cfg, work)
    log_to(work / LOG_FILE)  # moves into --out with the model
    try:
        for step in range(first, max_steps + 1):
            if meta is None:  # a new pruning step: importance, prune, (speed)
                limits = (total, unprunable, max_steps)
                student, meta = _prune_step(cfg, step, student, enc, limits, speedup)
                meta.update(history=history, clock=time.perf_counter() - start)
            last = meta["last"]
            steps = (cfg.final_recovery_steps or cfg.recovery_steps) if last else cfg.recovery_steps
            # Recovery's data order goes on from the draws of the earlier recoveries.
            draws = sum(math.ceil(h["recovery_steps"] / per_epoch) for h in meta["history"])
            phase = Phase(
                name=f"recovery {step}",
                model=student,
                step=recovery_step(student, reference, enc, task.kind, cfg.hidden_weight),
                batches=order.epochs(first=draws),
                steps_per_epoch=per_epoch,
                total_steps=steps,
                optim=tc,
                max_grad_norm=tc.max_grad_norm,
                checkpoints=work / "checkpoints",
                checkpoint_every=cfg.checkpoint_every,
                tag=str(step),
                meta=meta,
                progress=True,  # bar, lines or none: reporting.progress decides
                nan_hint="lower --lr and start again",
            )
            losses = RecentLosses(20)
            state = run(phase, [losses, *callbacks], resume_from)
            resume_from = None
            student.eval()
            history, entry = state.meta["history"], state.meta["entry"]
            entry.update(
                encoder_parameters=encoder_parameters(student),
                heads_per_layer=list(student.config.heads_per_layer),
                intermediate_per_layer=list(student.config.intermediate_per_layer),
                layer_importance=state.meta["layer_importance"],
                recovery_steps=steps,
                recovery_loss=losses.mean(state),
                seconds=round(time.perf_counter() - start, 1),
            )
            history.append(entry)
            log(
                f"step {step}: {entry['encoder_parameters']} encoder parameters "
                f"({100 * entry['encoder_parameters'] / total:.1f}%), recovery loss "
                f"{entry['recovery_loss']:.4f}"
            )
            meta = None
            if last:
                break
    except BaseException as error:
        end_work(work, error)
        raise

    def dev_scores(model: Any) -> dict[str, float]:
        return score_model(
            model, tokenizer, task, source.splits, data_cfg.max_length, tc.eval_batch_size, True
        )

    scores = {"unpruned": dev_scores(reference), "pruned": dev_scores(student)}
    speed = speedup(student)
    kept = encoder_parameters(student)
    unpruned_score = metrics.task_score(scores["unpruned"])
    pruned_score = metrics.task_score(scores["pruned"])
    report: dict[str, Any] = {
        "lmshrink_version": __version__,
        "kind": "pruned",
        "task": task.name,
        "model": str(source.folder),
        "target": {"params": cfg.target_params or None, "speedup": cfg.target_speedup or None},
        "sparsity_definition": SPARSITY_DEFINITION,
        "encoder_parameters": {"unpruned": total, "pruned": kept},
        "encoder_sparsity": 1.0 - kept / total,
        "parameters": {
            "unpruned": count_parameters(reference),
            "pruned": count_parameters(student),
        },
        "heads_per_layer": list(student.config.heads_per_layer),
        "intermediate_per_layer": list(student.config.intermediate_per_layer),
        "speed": speed,
        "speedup": speed["ratio"]["pruned"],
        "dev": scores,
        "score": {"unpruned": unpruned_score, "pruned": pruned_score},
        "retention": pruned_score / unpruned_score if unpruned_score else None,
        "history": history,
        # the data as used (saved task filled in), so commands reading the model find it
        "config": to_dict(dataclasses.replace(cfg, data=data_cfg)),
    }
    if cfg.target_speedup:
        report["target_reached"] = speed["ratio"]["pruned"]["32"] >= cfg.target_speedup
    with staged_output(out) as stage:
        student.save_pretrained(stage)
        tokenizer.save_pretrained(stage)
        dump_yaml(cfg, stage / "config.yaml")
        report["size_bytes"] = {
            "unpruned": size_on_disk(source.folder),
            "pruned": size_on_disk(stage),
        }
        saved = {k: report[k] for k in ("lmshrink_version", "kind", "task", "model", "config")}
        saved.update(metrics=list(task.metrics), labels=list(task.labels), dev=scores["pruned"])
        (stage / METADATA_FILE).write_text(json.dumps(saved, indent=2) + "\n")
        (stage / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
        move_log(work, stage)
    end_work(work)
    return report
