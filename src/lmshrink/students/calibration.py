"""What a teacher does on a sample of the training texts, recorded through forward hooks:
the activations the `narrow` student family (`lmshrink.students.narrow`) derives its
weights from.

Sites are LayerNorms: "emb" (embeddings), "{i}.attn" and "{i}.out" (teacher layer i's two).
Samples are kept for the sites the student copies; means for every site.
"""

from __future__ import annotations

import dataclasses
import random
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

# The teacher runs on at most this many training texts (a seeded sample) and keeps at most
# this many token vectors per LayerNorm site (inputs and outputs, float32: 12.6 MB per site
# at width 768; a student of k layers copies 2k + 1 sites): enough for a stable PCA and
# LayerNorm fit.
CALIBRATION_TEXTS = 256
CALIBRATION_TOKENS = 2048
CALIBRATION_BATCH = 32


class _Mean:
    """A running mean of rows, in float64."""

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None
        self.count = 0

    def add(self, rows: torch.Tensor) -> None:  # rows [n, D]
        import torch

        s = rows.detach().to("cpu", torch.float64).sum(0)  # [D]
        self.total = s if self.total is None else self.total + s
        self.count += rows.shape[0]

    @property
    def value(self) -> torch.Tensor:
        assert self.total is not None, "no rows were seen"
        return self.total / max(self.count, 1)


@dataclasses.dataclass
class Calibration:
    """What the teacher does on a sample of the training texts (CPU; samples in float32,
    statistics in float64).

    Sites are LayerNorms: "emb" (embeddings), "{i}.attn" and "{i}.out" (teacher layer i's
    two). Samples are kept for the sites the student copies; means for every site.
    """

    norm_in: dict[str, torch.Tensor]  # site -> LayerNorm inputs [N, Ht]
    norm_out: dict[str, torch.Tensor]  # site -> LayerNorm outputs [N, Ht]
    out_mean: dict[str, torch.Tensor]  # site -> mean LayerNorm output [Ht]
    cls_mean: torch.Tensor  # [Ht] mean last-layer [CLS] vector (what the head reads)
    context_mean: dict[int, torch.Tensor]  # layer -> mean attention context [Ht]
    head_score: dict[int, torch.Tensor]  # layer -> mean norm of each head's output [nh]
    neuron_mean: dict[int, torch.Tensor]  # layer -> mean FFN activation [It]
    neuron_abs: dict[int, torch.Tensor]  # layer -> mean |FFN activation| [It]
    unit_mean: torch.Tensor  # [Hp] mean activation of the head's hidden units
    unit_abs: torch.Tensor  # [Hp] mean |activation| of the head's hidden units


def _encode_groups(
    tokenizer: Any, texts: list[Any], max_length: int, words: bool = False
) -> list[dict[str, torch.Tensor]]:
    """Padded encodings of `texts`: one batch for the single texts, one for the pairs; with
    `words`, `texts` are a token task's sentences (lists of words), one batch."""
    if words:
        return [
            dict(
                tokenizer(
                    [list(w) for w in texts],
                    is_split_into_words=True,
                    truncation=True,
                    max_length=max_length,
                    padding=True,
                    return_tensors="pt",
                )
            )
        ]
    batches = []
    for size in (1, 2):
        group = [t for t in texts if len(t) == size]
        if group:
            firsts = [t[0] for t in group]
            seconds = [t[1] for t in group] if size == 2 else None
            batches.append(
                dict(
                    tokenizer(
                        firsts,
                        seconds,
                        truncation=True,
                        max_length=max_length,
                        padding=True,
                        return_tensors="pt",
                    )
                )
            )
    return batches


def calibrate(
    teacher: nn.Module,
    layout: Any,
    tokenizer: Any,
    texts: list[Any],
    max_length: int,
    kept: list[int],
    words: bool = False,
) -> Calibration:
    """Run the teacher (eval mode, no gradients) on a seeded sample of `texts` and record,
    through forward hooks, what build_narrow needs (see `Calibration`). `layout` holds the
    teacher's BERT-style modules (`lmshrink.students.narrow.bert_layout`). With `words`,
    `texts` are a token task's sentences, each a list of words."""
    import torch

    sample = random.Random(0).sample(texts, min(len(texts), CALIBRATION_TEXTS))
    nh = teacher.config.num_attention_heads
    mask: dict[str, torch.Tensor] = {}  # "m": [B, T] bool, real tokens of the current batch
    norm_in: dict[str, list[torch.Tensor]] = {}
    norm_out: dict[str, list[torch.Tensor]] = {}
    stored: dict[str, int] = {}
    out_mean: dict[str, _Mean] = {}
    cls_mean = _Mean()
    context, head_norm, neuron, neuron_abs = {}, {}, {}, {}
    unit, unit_abs = _Mean(), _Mean()
    last = len(layout.layers) - 1

    def norm_hook(site: str, keep: bool):
        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
            z, y = args[0][mask["m"]], output[mask["m"]]  # [n, Ht] real tokens only
            out_mean.setdefault(site, _Mean()).add(y)
            if site == f"{last}.out":
                cls_mean.add(output[:, 0])  # [B, Ht]
            room = CALIBRATION_TOKENS - stored.get(site, 0)
            if keep and room > 0:
                norm_in.setdefault(site, []).append(z[:room].float().cpu())
                norm_out.setdefault(site, []).append(y[:room].float().cpu())
                stored[site] = stored.get(site, 0) + min(room, z.shape[0])

        return hook

    def context_hook(i: int):
        def hook(module: nn.Linear, args: tuple[Any, ...]) -> None:
            ctx = args[0][mask["m"]].double()  # [n, Ht]: the heads' outputs, concatenated
            n, width = ctx.shape
            heads = ctx.view(n, nh, width // nh)  # [n, nh, d]
            w = module.weight.double().view(module.out_features, nh, width // nh)  # [H, nh, d]
            gram = torch.einsum("ohd,ohe->hde", w, w)  # [nh, d, d]
            sq = torch.einsum("nhd,hde,nhe->nh", heads, gram, heads)  # [n, nh] |W_h c_h|^2
            context.setdefault(i, _Mean()).add(ctx)
            head_norm.setdefault(i, _Mean()).add(sq.clamp_min(0).sqrt())

        return hook

    def ffn_hook(i: int):
        def hook(module: nn.Linear, args: tuple[Any, ...]) -> None:
            a = args[0][mask["m"]]  # [n, It] activations of the FFN neurons
            neuron.setdefault(i, _Mean()).add(a)
            neuron_abs.setdefault(i, _Mean()).add(a.abs())

        return hook

    def unit_hook(module: nn.Linear, args: tuple[Any, ...]) -> None:
        u = args[0].reshape(-1, module.in_features)  # [B, Hp] head hidden units
        unit.add(u)
        unit_abs.add(u.abs())

    handles = [
        layout.embeddings.LayerNorm.register_forward_hook(norm_hook("emb", True)),
        layout.head_out.register_forward_pre_hook(unit_hook),
    ]
    for i, layer in enumerate(layout.layers):
        for site, norm in (
            ("attn", layer.attention.output.LayerNorm),
            ("out", layer.output.LayerNorm),
        ):
            handles.append(norm.register_forward_hook(norm_hook(f"{i}.{site}", i in kept)))
        if i in kept:
            handles.append(layer.attention.output.dense.register_forward_pre_hook(context_hook(i)))
            handles.append(layer.output.dense.register_forward_pre_hook(ffn_hook(i)))

    was_training = teacher.training
    teacher.eval()
    device = next(teacher.parameters()).device
    try:
        with torch.inference_mode():
            for start in range(0, len(sample), CALIBRATION_BATCH):
                for batch in _encode_groups(
                    tokenizer, sample[start : start + CALIBRATION_BATCH], max_length, words
                ):
                    batch = {k: v.to(device) for k, v in batch.items()}
                    mask["m"] = batch["attention_mask"].bool()
                    teacher(**batch)
                if stored.get("emb", 0) >= CALIBRATION_TOKENS:
                    break
    finally:
        for handle in handles:
            handle.remove()
        teacher.train(was_training)

    return Calibration(
        norm_in={s: torch.cat(v) for s, v in norm_in.items()},
        norm_out={s: torch.cat(v) for s, v in norm_out.items()},
        out_mean={s: m.value for s, m in out_mean.items()},
        cls_mean=cls_mean.value,
        context_mean={i: m.value for i, m in context.items()},
        head_score={i: m.value for i, m in head_norm.items()},
        neuron_mean={i: m.value for i, m in neuron.items()},
        neuron_abs={i: m.value for i, m in neuron_abs.items()},
        unit_mean=unit.value,
        unit_abs=unit_abs.value,
    )
