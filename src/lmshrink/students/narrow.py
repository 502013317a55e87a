"""The `narrow` student family: a narrower, shallower copy of a BERT-style teacher whose
every weight is derived from the teacher's (see `build_narrow`).

The student is a stock transformers model of the teacher's class (`*ForSequenceClassification`,
or `*ForTokenClassification` for a token task's teacher), so its `save_pretrained` folder
loads with the matching Auto class without importing lmshrink (DESIGN.md, convention 6). It
reads the teacher's token ids.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import TYPE_CHECKING, Any

from lmshrink.config import option
from lmshrink.errors import ConfigError
from lmshrink.students.common import (
    Student,
    apply_task_head,
    check_teacher,
    is_token_classifier,
    positive_int,
    register_student,
    transformer_layer_groups,
    uniform_layer_ids,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

    from lmshrink.students.calibration import Calibration

# Singular values below this fraction of a head's largest carry nothing (see `_factor`).
RANK_TOLERANCE = 1e-6


@dataclasses.dataclass
class NarrowSettings:
    """The `narrow` student's settings (`student:` keys)."""

    layers: int = option(2, "number of transformer layers.", flag="student_layers")
    hidden_size: int = option(256, "hidden width (at most the teacher's).")
    num_heads: int | None = option(None, "attention heads (default: keep the teacher's head size).")
    intermediate_size: int | None = option(None, "FFN size (default 4 x hidden).")


@dataclasses.dataclass
class _Layout:
    """The modules of a BERT-style classifier that build_narrow reads and writes."""

    embeddings: nn.Module  # word/position/token-type tables and a LayerNorm
    layers: nn.ModuleList  # BertLayer-like: attention.self.{query,key,value}, ...
    # reads the last layer's [CLS] vector: pooler.dense or classifier.dense; None for a token
    # classifier, whose head is one linear map of every token's state
    head_in: nn.Linear | None
    head_out: nn.Linear  # writes the logits: classifier or classifier.out_proj


def bert_layout(model: nn.Module) -> _Layout:
    """The BERT-style modules of `model`, or a ConfigError naming what build_narrow supports."""
    from torch import nn

    base = model.base_model
    embeddings = getattr(base, "embeddings", None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    classifier = getattr(model, "classifier", None)
    pooler = getattr(base, "pooler", None)
    head: tuple[Any, Any] = (None, None)
    token_head = is_token_classifier(model) and isinstance(classifier, nn.Linear)
    if token_head:
        head = (None, classifier)  # BertForTokenClassification, RobertaForTokenClassification
    elif isinstance(classifier, nn.Linear) and pooler is not None:
        head = (getattr(pooler, "dense", None), classifier)  # BERT
    elif classifier is not None:
        head = (getattr(classifier, "dense", None), getattr(classifier, "out_proj", None))
    needed = head[1:] if token_head else head  # a token head has no head_in
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
        and all(isinstance(m, nn.Linear) and m.bias is not None for m in needed)
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
    import torch

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
    import torch

    zs = z.double() @ P  # [N, Hs]
    centred = zs - zs.mean(1, keepdim=True)
    n = centred / torch.sqrt(centred.pow(2).mean(1, keepdim=True) + eps)  # [N, Hs]
    t = y.double() @ P  # [N, Hs]
    n_c, t_c = n - n.mean(0), t - t.mean(0)
    weight = (n_c * t_c).sum(0) / n_c.pow(2).sum(0).clamp_min(1e-12)  # [Hs]
    return weight, t.mean(0) - weight * n.mean(0)


def _top(scores: torch.Tensor, count: int) -> tuple[list[int], list[int]]:
    """(kept, dropped) indices, both increasing: the `count` highest scores are kept."""
    import torch

    kept = sorted(torch.argsort(scores, descending=True)[:count].tolist())
    kept_set = set(kept)
    return kept, [i for i in range(len(scores)) if i not in kept_set]


def _factor(m: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(left [R, r], right [r, C], live [r]) with left @ right the best rank-r approximation
    of `m [R, C]`, the singular values split evenly between the factors; `live` marks the
    components whose singular value is not negligible."""
    import torch

    u, s, vh = torch.linalg.svd(m)
    u, s, vh = u[:, :rank], s[:rank], vh[:rank]
    root = s.sqrt()  # [r]
    largest = float(s.max()) if s.numel() else 0.0
    live = s > RANK_TOLERANCE * largest if largest > 0 else torch.zeros_like(s, dtype=torch.bool)
    return u * root, root[:, None] * vh, live


def _as(t: torch.Tensor) -> torch.Tensor:
    import torch

    return t.detach().to("cpu", torch.float64)


def _write(param: torch.Tensor, value: torch.Tensor) -> None:
    import torch

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
    import torch

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
    import torch

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


def _narrow_head(t: _Layout, s: _Layout, P: torch.Tensor, calib: Calibration) -> None:
    """Student pooler/classifier from the teacher's: the head's hidden units with the
    largest mean contribution to the logits are kept (an elementwise tanh does not commute
    with a projection, a choice of units does); their inputs read the [CLS] vector through
    P; each dropped unit's mean goes into the logits' bias. Student units beyond the
    teacher's count (only if the head is wider than the teacher's) get zero output weights."""
    import torch

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


def _narrow_token_head(t: _Layout, s: _Layout, P: torch.Tensor, lost_out: torch.Tensor) -> None:
    """A token classifier's head from the teacher's: one linear map of each token's last
    state, so it reads the student's state through P (W P) and what P drops of the last
    layer's mean output (`lost_out [Ht]`) goes into the bias."""
    Wc, bc = _as(t.head_out.weight), _as(t.head_out.bias)  # [C, Ht], [C]
    _write(s.head_out.weight, Wc @ P)  # [C, Hs]
    _write(s.head_out.bias, bc + Wc @ lost_out)


@register_student("narrow", NarrowSettings, "fewer/narrower layers initialised from the teacher")
def build_narrow(
    teacher: nn.Module,
    tokenizer: Any,
    texts: list[tuple[str, ...]],
    task_head: dict[str, Any],
    max_length: int,
    settings: NarrowSettings,
) -> Student:
    """A narrower, shallower copy of a BERT-style teacher, initialised from the teacher.

    The config is the teacher's with `layers` layers (taken from the teacher's layers
    `uniform_layer_ids`), width `hidden_size` (at most the teacher's), `num_heads` (default:
    keep the teacher's head size, e.g. 384 / 12 heads -> 256 / 8; see `_default_heads`) and
    FFN size `intermediate_size` (default 4 * hidden_size). It reads the teacher's token ids.

    The teacher runs once on a seeded sample of `texts` (`CALIBRATION_TEXTS`, truncated to
    `max_length`; a token classifier's texts are sentences as lists of words). One projection P
    [Ht, Hs] maps the teacher's hidden stream to the student's: the top principal directions of
    the teacher's hidden states at the copied LayerNorms (embeddings and the kept layers),
    aligned with the teacher's coordinates (`_basis`). Every tensor that reads the stream is
    multiplied by P on its input side, every one that writes it by P^T on its output side; what
    P drops of a stream's mean is folded into the reading layer's bias. Derived from the
    teacher:

    - word, position and token-type embeddings: the teacher's tables times P;
    - every LayerNorm: weight and bias fitted per coordinate (`_fit_norm`);
    - self-attention: the heads with the largest output, factored to the student's head
      size (`_narrow_attention`); FFN: the neurons with the largest contribution
      (`_narrow_feed_forward`); pooler and classifier: the hidden units with the largest
      contribution (`_narrow_head`; a token classifier's one linear map reads the student's
      state through P, `_narrow_token_head`); dropped heads, neurons and units leave their
      mean output in the bias.

    Random (the model's own initialisation; seed torch for a reproducible student): only
    the input side of what the teacher cannot fill (student heads, FFN neurons or head units
    beyond the teacher's count, a head's factors beyond its rank), whose output side is
    zero, so the student starts as the projected teacher and the extra capacity still trains.
    """
    from torch import nn

    from lmshrink.students.calibration import calibrate

    check_teacher(teacher, task_head)
    layout = bert_layout(teacher)
    t_config = teacher.config
    total, width = len(layout.layers), t_config.hidden_size
    layers = positive_int("layers", settings.layers)
    hidden_size = positive_int("hidden_size", settings.hidden_size)
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
    num_heads, intermediate_size = settings.num_heads, settings.intermediate_size
    heads = _default_heads(hidden_size, teacher_head_dim) if num_heads is None else num_heads
    heads = positive_int("num_heads", heads)
    if hidden_size % heads:
        raise ConfigError(
            f"hidden_size={hidden_size} is not divisible by num_heads={heads}; every head "
            "must have the same size."
        )
    ffn = 4 * hidden_size if intermediate_size is None else intermediate_size
    ffn = positive_int("intermediate_size", ffn)
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
    apply_task_head(config, task_head)
    student = type(teacher)(config)
    s_layout = bert_layout(student)

    token = layout.head_in is None  # a token classifier reads its sentences as words
    calib = calibrate(teacher, layout, tokenizer, texts, max_length, ids, words=token)
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
    if token:
        _narrow_token_head(layout, s_layout, P, lost(f"{ids[-1]}.out"))
    else:
        _narrow_head(layout, s_layout, P, calib)
    return Student(
        model=student,
        tokenizer=tokenizer,
        layer_groups=transformer_layer_groups(student),
        token_states=True,
        teacher_tokenizer=True,
        teacher_layers=ids,
    )
