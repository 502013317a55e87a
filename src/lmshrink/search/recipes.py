"""How the search trains each family: the distill settings of a student architecture, the
prune settings of a pruned teacher.

The BiLSTM and static students use the XtremeDistil schedule (`default_stages`: the
teacher's representation, then its logits on the transfer set, then the gold labels); the
layer-subset transformer uses TinyBERT's two steps (recipes/tinybert.yaml: embeddings,
hidden states and attention scores over a uniform layer map, then soft labels), which kept
95.5% of the GLUE teachers' average score against 88.3% for logits alone
(bench/results/glue_students.md). All of them read one teacher cache.

A pruned teacher is made by `lmshrink prune --target-params keep` with `PRUNE` below. Its
recovery distils from the unpruned teacher online, on the task's training inputs (the
search's `--max-train-samples` subset), not on the transfer set, and reads no cache.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lmshrink.search.candidates import Architecture, pruned_keep


@dataclasses.dataclass(frozen=True)
class PruneRecipe:
    """The prune settings of the search: bench/pruning.py's for SST-2, measured in
    bench/results/pruning.md (SST-2 rows: 98-99% of the teacher's dev score at 2-3x, 9 to 13
    minutes each on 2 cores).

    Three pruning steps, each re-estimating importance on 512 training examples; 150
    recovery steps after each of the first two and 1,000 after the last (1,300 steps of
    batch 32 at lr 1e-4, soft KL on logits plus 1 x hidden-state MSE). Prune's defaults
    (200 recovery steps after each pruning step, 600 in all, lr 5e-5) would recover in half
    the time but were never measured for accuracy. Recovery runs a fixed number of steps
    whatever the size of the training set: a step takes ~0.3-0.5 s on 2 cores on SST-2's
    short sentences, up to ~1.5 s on pairs at max length 128 (MRPC). Prune's own speed
    measurement (in its prune.json) is cut to one short round: the search times every
    candidate itself, end to end."""

    steps: int = 3
    recovery_steps: int = 150
    final_recovery_steps: int = 1000
    importance_examples: int = 512
    hidden_weight: float = 1.0
    lr: float = 1e-4
    batch_size: int = 32
    speed_examples: int = 32
    rounds: int = 1


PRUNE = PruneRecipe()


def prune_settings(arch: Architecture) -> dict[str, Any]:
    """The target and schedule keys of a PruneConfig for `arch` (a pruned teacher), from
    `PRUNE` (read when called, so a test can make it small)."""
    recipe = PRUNE
    return {
        "target_params": pruned_keep(arch),
        "steps": recipe.steps,
        "recovery_steps": recipe.recovery_steps,
        "final_recovery_steps": recipe.final_recovery_steps,
        "importance_examples": recipe.importance_examples,
        "hidden_weight": recipe.hidden_weight,
        "speed_examples": recipe.speed_examples,
        "rounds": recipe.rounds,
        "train": {"lr": recipe.lr, "batch_size": recipe.batch_size},
    }


TINYBERT_INTERMEDIATE = {
    "name": "intermediate",
    "data": "transfer",
    "losses": [{"name": "embedding_mse"}, {"name": "hidden_mse"}, {"name": "attention_mse"}],
    "epochs": 3,
    "lr": 1.0e-4,
    "batch_size": 32,
}


def tinybert_stages(kind: Any) -> list[dict[str, Any]]:
    """TinyBERT's stages for a task of `kind` (its logit loss: soft KL, per word for a
    token task, the score's squared error for regression)."""
    params = {"temperature": 1.0} if "soft_kl" in kind.logit_loss else {}
    prediction = {
        "name": "prediction",
        "data": "transfer",
        "losses": [{"name": kind.logit_loss, "params": params}],
        "epochs": 3,
        "lr": 5.0e-5,
        "batch_size": 32,
    }
    return [dict(TINYBERT_INTERMEDIATE), prediction]


def distill_settings(arch: Architecture, kind: Any) -> dict[str, Any]:
    """The `student`, `layer_map` and `stages` keys of a DistillConfig for `arch` (a
    student family: layers, bilstm, static)."""
    student = {"kind": arch.family, **dict(arch.settings)}
    if arch.family == "layers":
        return {
            "student": student,
            "layer_map": {"strategy": "uniform", "include_embeddings": True},
            "stages": tinybert_stages(kind),
        }
    return {"student": student, "stages": []}  # [] : the XtremeDistil default for the task
