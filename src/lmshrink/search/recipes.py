"""How the search trains each student family: the distill settings of an architecture.

The BiLSTM and static students use the XtremeDistil schedule (`default_stages`: the
teacher's representation, then its logits on the transfer set, then the gold labels); the
layer-subset transformer uses TinyBERT's two steps (recipes/tinybert.yaml: embeddings,
hidden states and attention scores over a uniform layer map, then soft labels), which kept
95.5% of the GLUE teachers' average score against 88.3% for logits alone
(bench/results/glue_students.md). All of them read one teacher cache.
"""

from __future__ import annotations

from typing import Any

from lmshrink.search.candidates import Architecture

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
