"""Transformer students: a subset of the teacher's layers, a narrower copy, or any checkpoint.

Every builder returns a stock transformers `*ForSequenceClassification` model, so its
`save_pretrained` folder loads with `AutoModelForSequenceClassification.from_pretrained`
without importing lmshrink (DESIGN.md, convention 6). Builders take the `STUDENTS` signature
`(teacher, tokenizer, texts, task_head, max_length, **settings)`; unknown settings raise
`ConfigError`. They also set two plain attributes on the model (not saved with it):

- `lmshrink_tokenizer`: the tokenizer the student reads. `layers` and `narrow` students read
  the teacher's ids (its tokenizer); a `pretrained` student keeps its checkpoint's own, so
  the teacher and the student each tokenize the same text. `student_tokenizer()` reads it.
- `lmshrink_teacher_layers`: for each student layer, the 0-based teacher layer it starts
  from (a default layer map for hidden-state losses), or None for `pretrained`.

`transformer_layer_groups()` gives a transformer student the bottom-up groups the training
loop unfreezes gradually (what `BiLSTMForSequenceClassification.layer_groups()` gives).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
from typing import Any

import torch
from torch import nn

from lmshrink.errors import ConfigError, ModelError

# Layers a `layers` student keeps when neither `layers` nor `layer_ids` is given.
DEFAULT_LAYERS = 3
# build_narrow runs the teacher on at most this many training texts (a seeded sample) and
# keeps at most this many token vectors per LayerNorm site (inputs and outputs, float32:
# 12.6 MB per site at width 768; a student of k layers copies 2k + 1 sites): enough for a
# stable PCA and LayerNorm fit.
CALIBRATION_TEXTS = 256
CALIBRATION_TOKENS = 2048
CALIBRATION_BATCH = 32
# Singular values below this fraction of a head's largest carry nothing (see `_factor`).
RANK_TOLERANCE = 1e-6


# --- shared helpers -------------------------------------------------------------------------


def student_tokenizer(student: Any, teacher_tokenizer: Any) -> Any:
    """The tokenizer `student` reads: the one its builder attached, else the teacher's."""
    own = getattr(student, "lmshrink_tokenizer", None)
    return teacher_tokenizer if own is None else own


def uniform_layer_ids(num_teacher_layers: int, num_layers: int) -> list[int]:
    """`num_layers` evenly spaced teacher layers (0-based), always ending with the last one.

    Student layer j starts from teacher layer `(j + 1) * L // k - 1`: 6 -> 3 keeps
    [1, 3, 5], 6 -> 2 keeps [2, 5], 4 -> 2 keeps [1, 3], 12 -> 6 keeps every odd layer.

    Why end with the last layer rather than start with the first ([0, 2, 4] for 6 -> 3):
    the teacher is a fine-tuned classifier, and its pooler and classifier were trained on
    its last layer's output. With that layer on top, the copied head reads the kind of
    representation it was fitted to, so the student starts close to the teacher's
    predictions; DistilBERT's own extraction kept the last layer for the same reason
    ([0, 2, 4, 7, 9, 11] of 12). Even spacing lets each student layer stand in for a block
    of L / k teacher layers, which is also the natural map for hidden-state losses.
    """
    if not 1 <= num_layers <= num_teacher_layers:
        raise ValueError(f"cannot choose {num_layers} of {num_teacher_layers} layers.")
    return [(j + 1) * num_teacher_layers // num_layers - 1 for j in range(num_layers)]


def find_layer_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(state-dict prefix, module list) of the model's stack of transformer layers.

    Found generically as the one `nn.ModuleList` named `layer` or `layers` that holds
    `config.num_hidden_layers` modules: `bert.encoder.layer` (BERT, MiniLM, RoBERTa, ELECTRA),
    `distilbert.transformer.layer` (DistilBERT).
    """
    count = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    found = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList)
        and len(module) == count
        and name.rsplit(".", 1)[-1] in ("layer", "layers")
    ]
    if count is None or len(found) != 1:
        raise ConfigError(
            f"{type(model).__name__}: could not find its list of transformer layers (one module "
            f"list named 'layer' or 'layers' with config.num_hidden_layers = {count} modules); "
            "transformer students support BERT-style encoders (BERT, MiniLM, RoBERTa, "
            "DistilBERT)."
        )
    return found[0]


def transformer_layer_groups(model: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """Named module groups, bottom-up, for gradual unfreezing of a transformer student.

    "embeddings", "layer.0" ... "layer.{k-1}", then "classifier": every other module that
    owns parameters (BERT's pooler and classifier, RoBERTa's classification head,
    DistilBERT's pre-classifier). The pooler sits with the classifier because a
    representation loss on the last layer's [CLS] vector gives it no gradient, just as it
    gives the classifier none. Every parameter is in exactly one group.
    """
    _, layers = find_layer_list(model)
    embeddings = getattr(model.base_model, "embeddings", None)
    if not isinstance(embeddings, nn.Module):
        raise ConfigError(
            f"{type(model).__name__}: has no embeddings module at base_model.embeddings; "
            "transformer students support BERT-style encoders."
        )
    groups: list[tuple[str, list[nn.Module]]] = [("embeddings", [embeddings])]
    groups += [(f"layer.{i}", [layer]) for i, layer in enumerate(layers)]
    covered = {id(p) for _, modules in groups for m in modules for p in m.parameters()}
    rest = [
        m for m in model.modules() if any(id(p) not in covered for p in m.parameters(recurse=False))
    ]
    if rest:
        groups.append(("classifier", rest))
    return groups


def _reject_unknown(kind: str, unknown: dict[str, Any], accepted: tuple[str, ...]) -> None:
    if unknown:
        raise ConfigError(
            f"student '{kind}' does not take {', '.join(sorted(unknown))}; its settings are "
            f"{', '.join(accepted)}."
        )


def _check_teacher(teacher: nn.Module, task_head: dict[str, Any]) -> None:
    """The teacher must be a sequence classifier whose head fits the task."""
    name = type(teacher).__name__
    if not name.endswith("ForSequenceClassification"):
        raise ModelError(
            f"the teacher is a {name}, not a sequence classifier; load the fine-tuned teacher "
            "with AutoModelForSequenceClassification (lmshrink finetune makes one)."
        )
    wanted = task_head.get("num_labels")
    if wanted is not None and teacher.config.num_labels != wanted:
        raise ModelError(
            f"the teacher's head has {teacher.config.num_labels} output(s) but the task needs "
            f"{wanted}; use a teacher fine-tuned for this task."
        )


def _apply_task_head(config: Any, task_head: dict[str, Any]) -> None:
    """Write the head's entries (`lmshrink.models.loading.task_head_settings`) into `config`.

    `num_labels` first: in transformers 5 it is derived from id2label, and setting it
    replaces id2label with generic names, which the given id2label then overwrites.
    """
    for key in ("num_labels", "id2label", "label2id", "problem_type"):
        if key in task_head:
            setattr(config, key, task_head[key])


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
    return value


# --- (a) a subset of the teacher's layers ----------------------------------------------------


def _choose_layers(total: int, layers: int | None, layer_ids: list[int] | None) -> list[int]:
    if layer_ids is not None:
        ids = list(layer_ids)
        if not ids or any(isinstance(i, bool) or not isinstance(i, int) for i in ids):
            raise ConfigError(
                f"layer_ids must be a non-empty list of layer numbers, got {layer_ids!r}."
            )
        bad = [i for i in ids if not 0 <= i < total]
        if bad:
            raise ConfigError(
                f"layer_ids {bad} out of range: the teacher has {total} layers, numbered 0 to "
                f"{total - 1}."
            )
        if ids != sorted(set(ids)):
            raise ConfigError(
                f"layer_ids must be increasing without repeats (the kept layers stay in the "
                f"teacher's order), got {ids}."
            )
        if layers is not None and layers != len(ids):
            raise ConfigError(
                f"layers={layers} disagrees with layer_ids {ids} ({len(ids)} layers); give one."
            )
        return ids
    count = DEFAULT_LAYERS if layers is None else layers
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= total:
        raise ConfigError(
            f"layers={count!r} out of range: the teacher has {total} layers, so a student "
            f"keeps 1 to {total} of them."
        )
    return uniform_layer_ids(total, count)


def build_layer_subset(
    teacher: nn.Module,
    tokenizer: Any,
    texts: list[tuple[str, ...]],
    task_head: dict[str, Any],
    max_length: int,
    layers: int | None = None,
    layer_ids: list[int] | None = None,
    **unknown: Any,
) -> nn.Module:
    """A copy of the teacher that keeps only some of its layers (DistilBERT's initialisation).

    The student has the teacher's class and config with `num_hidden_layers = k`; it keeps
    the teacher's layers `layer_ids` (0-based, increasing) or, by default, `layers`
    (default 3) evenly spaced ones ending with the last (`uniform_layer_ids`). Every other
    tensor (embeddings, pooler, classifier) is the teacher's, so all weights are copied and
    none is random. The config's head entries are set from `task_head`; the teacher's
    classifier must already have that many outputs. `texts` and `max_length` are unused.
    Works for any model whose layer stack `find_layer_list` finds.
    """
    _reject_unknown("layers", unknown, ("layers", "layer_ids"))
    _check_teacher(teacher, task_head)
    prefix, teacher_layers = find_layer_list(teacher)
    ids = _choose_layers(len(teacher_layers), layers, layer_ids)
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(ids)
    _apply_task_head(config, task_head)
    student = type(teacher)(config)

    position = {teacher_id: j for j, teacher_id in enumerate(ids)}
    weights = {}
    for key, value in teacher.state_dict().items():
        if key.startswith(prefix + "."):
            index, rest = key[len(prefix) + 1 :].split(".", 1)
            if int(index) not in position:
                continue
            key = f"{prefix}.{position[int(index)]}.{rest}"
        weights[key] = value
    student.load_state_dict(weights)  # strict: every student tensor comes from the teacher
    student.lmshrink_tokenizer = tokenizer
    student.lmshrink_teacher_layers = ids
    return student


# --- (b) a narrower, shallower student ------------------------------------------------------


@dataclasses.dataclass
class _Layout:
    """The modules of a BERT-style classifier that build_narrow reads and writes."""

    embeddings: nn.Module  # word/position/token-type tables and a LayerNorm
    layers: nn.ModuleList  # BertLayer-like: attention.self.{query,key,value}, ...
    head_in: nn.Linear  # reads the last layer's [CLS] vector: pooler.dense or classifier.dense
    head_out: nn.Linear  # writes the logits: classifier or classifier.out_proj


def _bert_layout(model: nn.Module) -> _Layout:
    """The BERT-style modules of `model`, or a ConfigError naming what build_narrow supports."""
    base = model.base_model
    embeddings = getattr(base, "embeddings", None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    classifier = getattr(model, "classifier", None)
    pooler = getattr(base, "pooler", None)
    head: tuple[Any, Any] = (None, None)
    if isinstance(classifier, nn.Linear) and pooler is not None:
        head = (getattr(pooler, "dense", None), classifier)  # BERT
    elif classifier is not None:
        head = (getattr(classifier, "dense", None), getattr(classifier, "out_proj", None))
    linear_paths = (
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    )
    norm_paths = ("attention.output.LayerNorm", "output.LayerNorm")

    def is_bert_layer(layer: nn.Module) -> bool:
        modules = dict(layer.named_modules())
        return all(
            isinstance(modules.get(p), nn.Linear) and modules[p].bias is not None
            for p in linear_paths
        ) and all(isinstance(modules.get(p), nn.LayerNorm) for p in norm_paths)

    ok = (
        isinstance(getattr(embeddings, "word_embeddings", None), nn.Embedding)
        and isinstance(getattr(embeddings, "LayerNorm", None), nn.LayerNorm)
        and not hasattr(base, "embeddings_project")
        and isinstance(layers, nn.ModuleList)
        and all(is_bert_layer(layer) for layer in layers)
        and all(isinstance(m, nn.Linear) and m.bias is not None for m in head)
    )
    if not ok:
        raise ConfigError(
            f"student 'narrow' supports BERT-style encoders (BERT, MiniLM, RoBERTa); "
            f"{type(model).__name__} has another layout; use student 'layers' or "
            "'pretrained' for it."
        )
    return _Layout(embeddings, layers, head[0], head[1])


def _default_heads(hidden_size: int, teacher_head_dim: int) -> int:
    """Heads that keep the teacher's head size when it divides `hidden_size`; otherwise the
    divisor of `hidden_size` whose head size is closest to the teacher's (ties: more heads).
    """
    if hidden_size % teacher_head_dim == 0:
        return hidden_size // teacher_head_dim
    divisors = [n for n in range(1, hidden_size + 1) if hidden_size % n == 0]
    return min(divisors, key=lambda n: (abs(hidden_size // n - teacher_head_dim), -n))


class _Mean:
    """A running mean of rows, in float64."""

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None
        self.count = 0

    def add(self, rows: torch.Tensor) -> None:  # rows [n, D]
        s = rows.detach().to("cpu", torch.float64).sum(0)  # [D]
        self.total = s if self.total is None else self.total + s
        self.count += rows.shape[0]

    @property
    def value(self) -> torch.Tensor:
        assert self.total is not None, "no rows were seen"
        return self.total / max(self.count, 1)


@dataclasses.dataclass
class _Calibration:
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
    tokenizer: Any, texts: list[tuple[str, ...]], max_length: int
) -> list[dict[str, torch.Tensor]]:
    """Padded encodings of `texts`: one batch for the single texts, one for the pairs."""
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


def _calibrate(
    teacher: nn.Module,
    layout: _Layout,
    tokenizer: Any,
    texts: list[tuple[str, ...]],
    max_length: int,
    kept: list[int],
) -> _Calibration:
    """Run the teacher (eval mode, no gradients) on a seeded sample of `texts` and record,
    through forward hooks, what build_narrow needs (see `_Calibration`)."""
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
                    tokenizer, sample[start : start + CALIBRATION_BATCH], max_length
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

    return _Calibration(
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


def _basis(samples: list[torch.Tensor], width: int) -> torch.Tensor:
    """P [Ht, Hs]: orthonormal columns spanning the `width` principal directions of the rows
    of `samples` (the teacher's hidden states), turned within that span to line up with
    the teacher's own coordinates.

    Any orthonormal basis of the span serves the linear maps equally; the turn matters for
    what acts per coordinate (LayerNorm's scale and shift). Student coordinate j is made as
    close as possible to teacher coordinate c_j, where c are the `width` teacher coordinates
    that the span holds most of (orthogonal Procrustes). At full width P is the identity,
    so the student is then the teacher.
    """
    count, total, second = 0, 0.0, 0.0
    for rows in samples:  # one site at a time, so only one is ever in float64
        x = rows.double()  # [N, Ht]
        count, total, second = count + x.shape[0], total + x.sum(0), second + x.T @ x
    mean = total / count  # [Ht]
    covariance = second - count * torch.outer(mean, mean)  # [Ht, Ht], unnormalised
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
    top = eigenvectors[:, torch.argsort(eigenvalues, descending=True)[:width]]  # [Ht, Hs]
    coords = torch.sort(torch.argsort(top.pow(2).sum(1), descending=True)[:width]).values
    u, _, vh = torch.linalg.svd(top[coords].T)  # top^T E, E selecting `coords`: [Hs, Hs]
    return top @ (u @ vh)  # [Ht, Hs]


def _fit_norm(
    z: torch.Tensor, y: torch.Tensor, P: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) [Hs] of a student LayerNorm that maps the teacher's LayerNorm inputs
    `z [N, Ht]`, seen in student coordinates, closest to its outputs `y [N, Ht]` in student
    coordinates: a least-squares line per coordinate. Projection changes each token's mean
    and spread, so copying the teacher's scale and shift would not do.
    """
    zs = z.double() @ P  # [N, Hs]
    centred = zs - zs.mean(1, keepdim=True)
    n = centred / torch.sqrt(centred.pow(2).mean(1, keepdim=True) + eps)  # [N, Hs]
    t = y.double() @ P  # [N, Hs]
    n_c, t_c = n - n.mean(0), t - t.mean(0)
    weight = (n_c * t_c).sum(0) / n_c.pow(2).sum(0).clamp_min(1e-12)  # [Hs]
    return weight, t.mean(0) - weight * n.mean(0)


def _top(scores: torch.Tensor, count: int) -> tuple[list[int], list[int]]:
    """(kept, dropped) indices, both increasing: the `count` highest scores are kept."""
    kept = sorted(torch.argsort(scores, descending=True)[:count].tolist())
    kept_set = set(kept)
    return kept, [i for i in range(len(scores)) if i not in kept_set]


def _factor(m: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(left [R, r], right [r, C], live [r]) with left @ right the best rank-r approximation
    of `m [R, C]`, the singular values split evenly between the factors; `live` marks the
    components whose singular value is not negligible."""
    u, s, vh = torch.linalg.svd(m)
    u, s, vh = u[:, :rank], s[:rank], vh[:rank]
    root = s.sqrt()  # [r]
    largest = float(s.max()) if s.numel() else 0.0
    live = s > RANK_TOLERANCE * largest if largest > 0 else torch.zeros_like(s, dtype=torch.bool)
    return u * root, root[:, None] * vh, live


def _as(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", torch.float64)


def _write(param: torch.Tensor, value: torch.Tensor) -> None:
    with torch.no_grad():
        param.copy_(value.to(param.dtype))


def _narrow_attention(
    t_layer: nn.Module,
    s_layer: nn.Module,
    P: torch.Tensor,
    lost_in: torch.Tensor,
    head_score: torch.Tensor,
    context_mean: torch.Tensor,
) -> None:
    """Student self-attention from a teacher layer's, in student coordinates.

    Heads: the student's `nh_s` slots take the teacher heads with the largest `head_score
    [nh_t]` (mean norm of each head's output), in teacher order. Per kept head, the
    query-key form A = [Wq P | bq]^T (Wk P) [Hs + 1, Hs] (the query bias as one more input,
    always 1) and the value-output map B = P^T Wo_h Wv_h P [Hs, Hs] are factored by SVD to
    the student's head size ds: exact when ds covers their rank (always with the default
    head count, where ds = dt), their best approximation otherwise. A is scaled by
    sqrt(ds / dt) for the student's 1 / sqrt(ds). The key bias only adds a per-query
    constant to the scores, which softmax ignores, so it is 0; the value bias, and the mean
    output of each dropped head (`context_mean [Ht]`, the mean attention context), go into
    the output bias (attention weights sum to 1). `lost_in [Ht]` is the part of the layer's
    mean input that P drops; what it adds to the projections goes into their biases.
    Components with nothing to copy (a head's factors beyond its rank, student heads beyond
    the teacher's count) keep random query and value rows but zero key rows and output
    columns: they leave the initial function unchanged and still get gradients.
    """
    t_att, s_att = t_layer.attention, s_layer.attention
    nh_t = t_att.self.num_attention_heads
    nh_s = s_att.self.num_attention_heads
    dt, ds = t_att.self.attention_head_size, s_att.self.attention_head_size
    Wq, Wk, Wv = (_as(m.weight) for m in (t_att.self.query, t_att.self.key, t_att.self.value))
    bq, bv = (
        _as(m.bias) + W @ lost_in for m, W in ((t_att.self.query, Wq), (t_att.self.value, Wv))
    )
    Wo, bo = _as(t_att.output.dense.weight), _as(t_att.output.dense.bias)  # [Ht, Ht], [Ht]

    kept, dropped = _top(head_score, min(nh_s, nh_t))
    out_bias = bo.clone()
    for h in dropped:
        cols = slice(h * dt, (h + 1) * dt)
        out_bias += Wo[:, cols] @ context_mean[cols]  # its mean output
    q, k, v = (_as(m.weight).clone() for m in (s_att.self.query, s_att.self.key, s_att.self.value))
    q_bias, k_bias, v_bias = (
        _as(m.bias).clone() for m in (s_att.self.query, s_att.self.key, s_att.self.value)
    )
    o = torch.zeros_like(_as(s_att.output.dense.weight))  # [Hs, Hs]: unfilled stay 0
    scale = math.sqrt(ds / dt)
    for slot, h in enumerate(kept):
        rows, srows = slice(h * dt, (h + 1) * dt), slice(slot * ds, (slot + 1) * ds)
        query = torch.cat([Wq[rows] @ P, bq[rows, None]], dim=1)  # [dt, Hs + 1]: bias last
        form = scale * query.T @ (Wk[rows] @ P)  # [Hs + 1, Hs]
        left, right, live = _factor(form, ds)  # [Hs + 1, ds], [ds, Hs], [ds]
        q[srows][live], k[srows] = left[:-1].T[live], right * live[:, None]
        q_bias[srows], k_bias[srows] = left[-1] * live, 0.0
        out_bias += Wo[:, rows] @ bv[rows]  # the value bias's constant output
        left, right, live = _factor(P.T @ Wo[:, rows] @ Wv[rows] @ P, ds)  # B = P^T Wo Wv P
        v[srows][live], v_bias[srows] = right[live], 0.0
        o[:, srows] = left * live
    for module, weight, bias in (
        (s_att.self.query, q, q_bias),
        (s_att.self.key, k, k_bias),
        (s_att.self.value, v, v_bias),
        (s_att.output.dense, o, P.T @ out_bias),
    ):
        _write(module.weight, weight)
        _write(module.bias, bias)


def _narrow_feed_forward(
    t_layer: nn.Module,
    s_layer: nn.Module,
    P: torch.Tensor,
    lost_mid: torch.Tensor,
    neuron_abs: torch.Tensor,
    neuron_mean: torch.Tensor,
) -> None:
    """Student FFN from a teacher layer's: the neurons with the largest mean contribution
    (mean |activation| `neuron_abs [It]` times the norm of their output weights), in teacher
    order. Inputs are read through P and outputs written through P^T; each dropped neuron's
    mean output (from `neuron_mean [It]`) goes into the output bias, and what P drops of the
    mean input (`lost_mid [Ht]`) into the input bias. Student neurons beyond the teacher's
    count keep random input weights and get zero output weights."""
    t_in, t_out = t_layer.intermediate.dense, t_layer.output.dense
    s_in, s_out = s_layer.intermediate.dense, s_layer.output.dense
    Wi, bi = _as(t_in.weight), _as(t_in.bias) + _as(t_in.weight) @ lost_mid  # [It, Ht], [It]
    Wo, bo = _as(t_out.weight), _as(t_out.bias)  # [Ht, It], [Ht]
    scores = neuron_abs * Wo.norm(dim=0)  # [It]
    kept, dropped = _top(scores, min(s_in.out_features, len(scores)))
    n = len(kept)
    w_in, b_in = _as(s_in.weight).clone(), _as(s_in.bias).clone()
    w_out = torch.zeros_like(_as(s_out.weight))  # [Hs, Is]
    w_in[:n], b_in[:n] = Wi[kept] @ P, bi[kept]  # [n, Hs], [n]
    w_out[:, :n] = P.T @ Wo[:, kept]  # [Hs, n]
    b_out = P.T @ (bo + Wo[:, dropped] @ neuron_mean[dropped])  # [Hs]
    for module, weight, bias in ((s_in, w_in, b_in), (s_out, w_out, b_out)):
        _write(module.weight, weight)
        _write(module.bias, bias)


def _narrow_head(t: _Layout, s: _Layout, P: torch.Tensor, calib: _Calibration) -> None:
    """Student pooler/classifier from the teacher's: the head's hidden units with the
    largest mean contribution to the logits are kept (an elementwise tanh does not commute
    with a projection, a choice of units does); their inputs read the [CLS] vector through
    P; each dropped unit's mean goes into the logits' bias. Student units beyond the
    teacher's count (only if the head is wider than the teacher's) get zero output weights."""
    Wp = _as(t.head_in.weight)  # [Hp, Ht]
    bp = _as(t.head_in.bias) + Wp @ (calib.cls_mean - P @ (P.T @ calib.cls_mean))  # [Hp]
    Wc, bc = _as(t.head_out.weight), _as(t.head_out.bias)  # [C, Hp], [C]
    kept, dropped = _top(calib.unit_abs * Wc.norm(dim=0), min(s.head_in.out_features, len(bp)))
    n = len(kept)
    w_in, b_in = _as(s.head_in.weight).clone(), _as(s.head_in.bias).clone()
    w_out = torch.zeros_like(_as(s.head_out.weight))  # [C, Hp_s]
    w_in[:n], b_in[:n], w_out[:, :n] = Wp[kept] @ P, bp[kept], Wc[:, kept]
    b_out = bc + Wc[:, dropped] @ calib.unit_mean[dropped]  # [C]
    for module, weight, bias in ((s.head_in, w_in, b_in), (s.head_out, w_out, b_out)):
        _write(module.weight, weight)
        _write(module.bias, bias)


def build_narrow(
    teacher: nn.Module,
    tokenizer: Any,
    texts: list[tuple[str, ...]],
    task_head: dict[str, Any],
    max_length: int,
    layers: int = 2,
    hidden_size: int = 256,
    num_heads: int | None = None,
    intermediate_size: int | None = None,
    **unknown: Any,
) -> nn.Module:
    """A narrower, shallower copy of a BERT-style teacher, initialised from the teacher.

    The config is the teacher's with `layers` layers (taken from the teacher's layers
    `uniform_layer_ids`), width `hidden_size` (at most the teacher's), `num_heads` (default:
    keep the teacher's head size, e.g. 384 / 12 heads -> 256 / 8; see `_default_heads`) and
    FFN size `intermediate_size` (default 4 * hidden_size). It reads the teacher's token ids.

    The teacher runs once on a seeded sample of `texts` (`CALIBRATION_TEXTS`, truncated to
    `max_length`). One projection P [Ht, Hs] maps the teacher's hidden stream to the
    student's: the top principal directions of the teacher's hidden states at the copied
    LayerNorms (embeddings and the kept layers), aligned with the teacher's coordinates
    (`_basis`). Every tensor that reads the stream is multiplied by P on its input side,
    every one that writes it by P^T on its output side; what P drops of a stream's mean is
    folded into the reading layer's bias. Derived from the teacher:

    - word, position and token-type embeddings: the teacher's tables times P;
    - every LayerNorm: weight and bias fitted per coordinate (`_fit_norm`);
    - self-attention: the heads with the largest output, factored to the student's head
      size (`_narrow_attention`); FFN: the neurons with the largest contribution
      (`_narrow_feed_forward`); pooler and classifier: the hidden units with the largest
      contribution (`_narrow_head`); dropped heads, neurons and units leave their mean
      output in the bias.

    Random (the model's own initialisation; seed torch for a reproducible student): only
    the input side of what the teacher cannot fill (student heads, FFN neurons or head units
    beyond the teacher's count, a head's factors beyond its rank), whose output side is
    zero, so the student starts as the projected teacher and the extra capacity still trains.
    """
    _reject_unknown("narrow", unknown, ("layers", "hidden_size", "num_heads", "intermediate_size"))
    _check_teacher(teacher, task_head)
    layout = _bert_layout(teacher)
    t_config = teacher.config
    total, width = len(layout.layers), t_config.hidden_size
    layers = _positive_int("layers", layers)
    hidden_size = _positive_int("hidden_size", hidden_size)
    if layers > total:
        raise ConfigError(
            f"layers={layers} out of range: the teacher has {total} layers, so a narrow "
            f"student has 1 to {total}."
        )
    if hidden_size > width:
        raise ConfigError(
            f"hidden_size={hidden_size} exceeds the teacher's {width}; a narrow student is "
            f"at most as wide as its teacher (give hidden_size <= {width})."
        )
    teacher_head_dim = width // t_config.num_attention_heads
    heads = _default_heads(hidden_size, teacher_head_dim) if num_heads is None else num_heads
    heads = _positive_int("num_heads", heads)
    if hidden_size % heads:
        raise ConfigError(
            f"hidden_size={hidden_size} is not divisible by num_heads={heads}; every head "
            "must have the same size."
        )
    ffn = 4 * hidden_size if intermediate_size is None else intermediate_size
    ffn = _positive_int("intermediate_size", ffn)
    if not texts:
        raise ConfigError(
            "student 'narrow' starts from the teacher's activations on the training texts, "
            "and got no texts; give the run a transfer set or labeled data."
        )

    ids = uniform_layer_ids(total, layers)
    config = copy.deepcopy(t_config)
    config.num_hidden_layers = layers
    config.hidden_size = hidden_size
    config.num_attention_heads = heads
    config.intermediate_size = ffn
    _apply_task_head(config, task_head)
    student = type(teacher)(config)
    s_layout = _bert_layout(student)

    calib = _calibrate(teacher, layout, tokenizer, texts, max_length, ids)
    sites = ["emb"] + [f"{i}.{s}" for i in ids for s in ("attn", "out")]
    P = _basis([calib.norm_out[s] for s in sites], hidden_size)  # [Ht, Hs]
    eps = config.layer_norm_eps

    def lost(site: str) -> torch.Tensor:  # [Ht] the part of a site's mean output P drops
        mean = calib.out_mean[site]
        return mean - P @ (P.T @ mean)

    t_emb, s_emb = layout.embeddings, s_layout.embeddings
    for name, table in t_emb.named_children():
        if isinstance(table, nn.Embedding) and table.embedding_dim == width:
            _write(getattr(s_emb, name).weight, _as(table.weight) @ P)  # [V, Hs]
    norms = [(s_emb.LayerNorm, "emb")]
    for j, i in enumerate(ids):
        s_layer = s_layout.layers[j]
        norms.append((s_layer.attention.output.LayerNorm, f"{i}.attn"))
        norms.append((s_layer.output.LayerNorm, f"{i}.out"))
    for s_norm, site in norms:
        weight, bias = _fit_norm(calib.norm_in[site], calib.norm_out[site], P, eps)
        _write(s_norm.weight, weight)
        _write(s_norm.bias, bias)
    for j, i in enumerate(ids):
        # Teacher layer i read layer i-1's output; its weights are fitted to that stream.
        previous = "emb" if i == 0 else f"{i - 1}.out"
        t_layer, s_layer = layout.layers[i], s_layout.layers[j]
        _narrow_attention(
            t_layer, s_layer, P, lost(previous), calib.head_score[i], calib.context_mean[i]
        )
        _narrow_feed_forward(
            t_layer, s_layer, P, lost(f"{i}.attn"), calib.neuron_abs[i], calib.neuron_mean[i]
        )
    _narrow_head(layout, s_layout, P, calib)
    student.lmshrink_tokenizer = tokenizer
    student.lmshrink_teacher_layers = ids
    return student


# --- (c) any checkpoint as the student -------------------------------------------------------


def build_pretrained(
    teacher: nn.Module,
    tokenizer: Any,
    texts: list[tuple[str, ...]],
    task_head: dict[str, Any],
    max_length: int,
    model: str = "",
    **unknown: Any,
) -> nn.Module:
    """Any Hugging Face checkpoint (folder, hub id or `packaged:minilm`) as the student.

    It is loaded with AutoModelForSequenceClassification and the task's head entries; a
    head of another size (or none) is replaced by a random one, a head of the right size is
    kept. The student keeps its own tokenizer (`lmshrink_tokenizer`), which may differ from
    the teacher's: each side tokenizes the same text itself, so only per-example teacher
    outputs (logits, a pooled vector) can be matched, not per-token ones. `texts` are
    unused; `max_length` must fit the student's position table.
    """
    from transformers import AutoModelForSequenceClassification

    from lmshrink.models.loading import (
        load_config,
        load_tokenizer,
        quiet_transformers,
        resolve_model_source,
    )

    _reject_unknown("pretrained", unknown, ("model",))
    if not model:
        raise ConfigError(
            "student 'pretrained' needs model: a model folder, hub id or packaged:minilm."
        )
    path = resolve_model_source(model)
    config = load_config(path)
    positions = getattr(config, "max_position_embeddings", None)
    if positions is not None and max_length > positions:
        raise ConfigError(
            f"{path}: the student reads at most {positions} tokens but max_length is "
            f"{max_length}; lower max_length."
        )
    student_tok = load_tokenizer(path)
    if student_tok.pad_token_id is None:
        raise ModelError(
            f"{path}: the student's tokenizer has no pad token, so batches cannot be padded; "
            "set tokenizer.pad_token (e.g. to its eos token) and save it into the folder."
        )
    with quiet_transformers():
        student = AutoModelForSequenceClassification.from_pretrained(
            path, ignore_mismatched_sizes=True, **task_head
        )
    if getattr(student.config, "pad_token_id", None) is None:
        student.config.pad_token_id = student_tok.pad_token_id
    student.train()  # as the other builders return it; from_pretrained returns eval mode
    student.lmshrink_tokenizer = student_tok
    student.lmshrink_teacher_layers = None
    return student
