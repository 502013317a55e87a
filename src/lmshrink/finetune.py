"""Fine-tuning a teacher: an encoder plus a task head, trained on the task's gold labels.

The output folder is a stock Hugging Face model folder (weights, config with
`id2label`/`label2id`, tokenizer) plus `lmshrink.json` (task, metric, data fingerprints,
dev history) and `config.yaml` (the resolved config). The weights of the epoch with the
best dev score are the ones saved.
"""

from __future__ import annotations

import json
import math
import random
import time
from typing import Any

from lmshrink import __version__
from lmshrink.config import FinetuneConfig, dump_yaml, to_dict
from lmshrink.data.batching import bucketed_batches, collate, encode
from lmshrink.data.splits import load_eval_splits, read_split, resolve_task
from lmshrink.errors import TrainingError
from lmshrink.evaluate import score_model
from lmshrink.measure import metrics
from lmshrink.models.loading import METADATA_FILE, count_parameters, load_for_training
from lmshrink.runs import check_out, staged_output
from lmshrink.training.optim import build_optimizer, set_seed


def finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Fine-tune `cfg.model` on `cfg.data.task`; returns the metadata written to the folder."""
    import torch
    from tqdm.auto import tqdm

    out = check_out(cfg.out, cfg.overwrite)
    task = resolve_task(cfg.data)
    tc = cfg.train
    train = read_split(task, "train", cfg.data).subset(cfg.data.max_train_samples, cfg.seed)
    # Low-resource mode: the same seed picks the same labeled rows as `lmshrink distill`.
    train = train.subset(cfg.data.num_labeled, cfg.seed)
    devs = load_eval_splits(task, "dev", cfg.data, cfg.seed)

    set_seed(cfg.seed)
    tokenizer, model = load_for_training(cfg.model, task)
    enc = encode(tokenizer, train, cfg.data.max_length)
    steps_per_epoch = math.ceil(len(enc) / tc.batch_size)
    total_steps = max(1, math.ceil(tc.epochs * steps_per_epoch))
    optimizer, scheduler = build_optimizer(model, tc, total_steps)
    order_rng = random.Random(cfg.seed)

    def evaluate_now() -> dict[str, float]:
        return score_model(model, tokenizer, task, devs, cfg.data.max_length, tc.eval_batch_size)

    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"score": -math.inf}
    start = time.perf_counter()
    step = 0
    model.train()
    bar = tqdm(
        total=total_steps, desc=f"finetune {task.name}", disable=not cfg.progress, mininterval=2.0
    )
    while step < total_steps:
        for indices in bucketed_batches(enc.lengths, tc.batch_size, order_rng):
            loss = model(**collate(enc, indices)).loss
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"loss became {loss.item()} at step {step + 1}; lower --lr "
                    "or check the labels (nothing was written)."
                )
            loss.backward()
            if tc.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            epoch_end = step % steps_per_epoch == 0 or step == total_steps
            if epoch_end or (tc.eval_every and step % tc.eval_every == 0):
                scores = evaluate_now()
                entry = {
                    "step": step,
                    "epoch": round(step / steps_per_epoch, 3),
                    "loss": loss.item(),
                    "dev": scores,
                    "score": metrics.task_score(scores),
                    "seconds": round(time.perf_counter() - start, 1),
                }
                history.append(entry)
                bar.write(
                    f"step {step} (epoch {entry['epoch']}): dev "
                    + ", ".join(f"{k} {100 * v:.2f}" for k, v in scores.items())
                )
                if entry["score"] > best["score"]:
                    best = {
                        **entry,
                        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
                    }
            if step == total_steps:
                break
    bar.close()
    train_seconds = time.perf_counter() - start

    model.load_state_dict(best.pop("state"))
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
        "train_seconds": round(train_seconds, 1),
        "config": to_dict(cfg),
    }
    with staged_output(out) as stage:
        model.save_pretrained(stage)
        tokenizer.save_pretrained(stage)
        dump_yaml(cfg, stage / "config.yaml")
        (stage / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return meta
