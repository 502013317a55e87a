"""Structured pruning of BERT-family classifiers and NER taggers (BERT, MiniLM, RoBERTa,
XLM-R): the building blocks of `lmshrink prune`.

Attention heads and FFN neurons are removed from the weight matrices (the result is a
`PrunedBertForSequenceClassification`, or `...ForTokenClassification` for a tagger, see
`lmshrink.models.pruned_bert`), so the model is really smaller and faster, and loads with
`AutoModelForSequenceClassification` (`AutoModelForTokenClassification`) `.from_pretrained`.
A tagger's importance uses its own loss (cross-entropy at each word's first sub-token), and
its recovery the soft KL at those positions.

**Importance**, estimated on the task's training data with the model's own task loss:
- a head's importance is `|dL/dg_h|` for a gate `g_h = 1` multiplied into its context vector
  (Michel et al., 2019); a neuron's is `|dL/dm_i|` for a gate multiplied into its activation,
  which is the first-order Taylor criterion `|sum over tokens of a_i * dL/da_i|`
  (Molchanov et al., 2017). The absolute value is taken per batch and summed over batches.
- Scores are normalised per layer (divided by the L2 norm of the layer's head scores, and
  of its neuron scores), as Michel et al. do for heads, so layers whose gradients are larger
  overall do not lose everything elsewhere; units are then ranked across all layers.
- A layer's importance is the sum of its raw (unnormalised) head and neuron scores; it is
  reported, and a layer goes as a whole when all its heads and neurons are pruned.

**What is kept.** For a target share `s` of the unpruned encoder parameters, heads and
neurons keep the same share `f` of their original numbers (each chosen globally by normalised
score), with `f` set so that the layers' unprunable parameters (LayerNorms, output biases)
plus the kept heads and neurons fit in `s` (rounded down, so the target is never exceeded).

**Recovery** after a pruning step is distillation from the unpruned model: the task kind's
logit loss (soft KL on logits; MSE on scores for regression) plus MSE between all hidden
states (same width and depth, so no projections); `recovery_step` is its step function for
the training loop.

**Encoder parameters** (`encoder_parameters`, `SPARSITY_DEFINITION`): all parameters of the
transformer layers, excluding embeddings and the classification head.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

from lmshrink.data.batching import Encoded
from lmshrink.errors import ConfigError
from lmshrink.models.loading import count_parameters

SPARSITY_DEFINITION = (
    "share of encoder parameters removed; encoder parameters are all parameters of the "
    "transformer layers (attention query/key/value/output and FFN weights and biases, and "
    "the layers' LayerNorms), excluding embeddings and the classification head (BERT's pooler "
    "and classifier, RoBERTa's dense and out_proj)"
)
# The stock classifiers pruning starts from, by class name, and their `PrunedBertConfig.family`.
SOURCES = {
    "BertForSequenceClassification": "bert",
    "RobertaForSequenceClassification": "roberta",
    "XLMRobertaForSequenceClassification": "roberta",
    "BertForTokenClassification": "bert",
    "RobertaForTokenClassification": "roberta",
    "XLMRobertaForTokenClassification": "roberta",
}
# RoBERTa's state keys -> the pruned model's (BERT's names; see lmshrink.models.pruned_bert).
ROBERTA_KEYS = {
    "roberta.": "bert.",
    "classifier.dense.": "bert.pooler.dense.",
    "classifier.out_proj.": "classifier.",
}


# --- conversion ---------------------------------------------------------------------------


def check_prunable(model: Any, source: str = "the model") -> None:
    """Raise ConfigError unless `model` is a BERT-family classifier that can be pruned."""
    from lmshrink.models.bilstm import BiLSTMConfig
    from lmshrink.models.pruned_bert import PrunedBertConfig

    model_type = getattr(model.config, "model_type", "?")
    if isinstance(model.config, PrunedBertConfig):
        return
    if type(model).__name__ in SOURCES:
        if model.config.is_decoder or model.config.add_cross_attention:
            raise ConfigError(f"{source}: pruning supports encoders, not '{model_type}' decoders.")
        return
    bilstm = isinstance(model.config, BiLSTMConfig)
    what = "a BiLSTM student" if bilstm else f"a '{model_type}' model"
    raise ConfigError(
        f"{source}: pruning supports BERT-family encoders (BERT, MiniLM, RoBERTa, XLM-R) with a "
        f"sequence or token classification head, but this is {what}; use distill with a "
        "smaller student instead."
    )


def pruned_class(model: Any) -> type:
    """The pruned model class for `model`: the token tagger for a token classifier."""
    from lmshrink.models.pruned_bert import (
        PrunedBertForSequenceClassification,
        PrunedBertForTokenClassification,
    )

    if type(model).__name__.endswith("ForTokenClassification"):
        return PrunedBertForTokenClassification
    return PrunedBertForSequenceClassification


def from_bert(model: Any) -> Any:
    """A `PrunedBertForSequenceClassification` (`...ForTokenClassification` for a tagger) with
    nothing removed, computing the same logits as the given BERT, RoBERTa or XLM-R classifier
    (same weights; BERT's state keys, RoBERTa's renamed as `ROBERTA_KEYS` says)."""
    from lmshrink.models.pruned_bert import PrunedBertConfig

    check_prunable(model)
    if isinstance(model.config, PrunedBertConfig):
        return model
    family = SOURCES[type(model).__name__]
    skip = ("model_type", "architectures", "transformers_version")
    settings = {k: v for k, v in model.config.to_dict().items() if k not in skip}
    config = PrunedBertConfig(**settings, family=family)
    config._attn_implementation = model.config._attn_implementation  # same kernel, same logits
    pruned = pruned_class(model)(config)
    state = model.state_dict()
    if family == "roberta":
        state = {_renamed(key, ROBERTA_KEYS): value for key, value in state.items()}
    pruned.load_state_dict(state, strict=True)
    pruned.to(next(model.parameters()).dtype)
    return pruned.train(model.training)


def _renamed(key: str, prefixes: dict[str, str]) -> str:
    """`key` with the first matching prefix of `prefixes` replaced."""
    for old, new in prefixes.items():
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def encoder_parameters(model: Any) -> int:
    """Parameters of the transformer layers (see SPARSITY_DEFINITION)."""
    return count_parameters(model.base_model.encoder)


# --- importance ---------------------------------------------------------------------------


@dataclasses.dataclass
class Importance:
    """Raw importance scores: `heads[l]` [h_l], `neurons[l]` [I_l] (see the module doc)."""

    heads: list[Any]
    neurons: list[Any]

    def layers(self) -> list[float]:
        """A layer's importance: the sum of its raw head and neuron scores."""
        return [float(h.sum() + n.sum()) for h, n in zip(self.heads, self.neurons, strict=True)]


def compute_importance(
    model: Any, enc: Encoded, batch_size: int, limit: int, progress: bool = False
) -> Importance:
    """|dL/d gate| of every head and FFN neuron, summed over batches of the first `limit`
    examples of `enc` (which must have labels), in the split's order; dropout is off so the
    estimate is stable. `progress`: show it (`reporting.progress`)."""
    import torch

    from lmshrink.training.inference import eval_batches

    was_training = model.training
    model.eval()
    head_gates = [
        torch.ones(layer.attention.self.num_heads, requires_grad=True) for layer in model.layers
    ]
    neuron_gates = [torch.ones(layer.ffn_size, requires_grad=True) for layer in model.layers]
    gates = head_gates + neuron_gates
    totals = [torch.zeros_like(g) for g in gates]
    # eval_batches leaves gradients on: they are what is measured.
    batches = eval_batches(
        enc, batch_size, order="dataset", limit=limit, progress=progress, desc="importance"
    )
    for _, batch, labels in batches:
        loss = model(**batch, labels=labels, head_mask=head_gates, neuron_mask=neuron_gates).loss
        grads = torch.autograd.grad(loss, gates, allow_unused=True)  # unused: 0-size layers
        for total, grad in zip(totals, grads, strict=True):
            if grad is not None:
                total += grad.abs()
    model.train(was_training)
    L = len(head_gates)
    return Importance(heads=totals[:L], neurons=totals[L:])


def normalise_per_layer(scores: list[Any]) -> list[Any]:
    """Each layer's scores [n_l] divided by their L2 norm (Michel et al., 2019)."""
    return [s / (s.norm(p=2) + 1e-20) for s in scores]


# --- choosing and slicing -----------------------------------------------------------------


def unit_costs(config: Any) -> tuple[int, int, int]:
    """(parameters per head, per FFN neuron, fixed per layer) of a BERT layer."""
    H, d = config.hidden_size, config.hidden_size // config.num_attention_heads
    head = 4 * H * d + 3 * d  # q/k/v rows and biases, output-projection columns
    neuron = 2 * H + 1  # intermediate row and bias, output column
    fixed = 6 * H  # two output biases and two LayerNorms (weight and bias)
    return head, neuron, fixed


def choose_keep(
    model: Any, importance: Importance, budget: int
) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """Heads and neurons to keep so that the encoder has at most `budget` parameters.

    Heads and neurons keep the same share `f` of the unpruned model's numbers
    (`config.num_attention_heads`, `config.intermediate_size` per layer), each chosen
    globally by per-layer-normalised score among the units the model still has.
    """
    import torch

    config = model.config
    L = config.num_hidden_layers
    head_cost, neuron_cost, fixed = unit_costs(config)
    all_heads, all_neurons = L * config.num_attention_heads, L * config.intermediate_size
    prunable = all_heads * head_cost + all_neurons * neuron_cost
    if budget < L * fixed:
        raise ConfigError(
            f"the target keeps {budget} encoder parameters, fewer than the {L * fixed} of the "
            "LayerNorms and output biases that pruning cannot remove; choose a larger target."
        )
    share = min(1.0, (budget - L * fixed) / prunable)

    def top(scores: list[Any], count: int) -> dict[int, list[int]]:
        flat = torch.cat([s.detach().float() for s in scores])  # [units]
        owner = [(layer, i) for layer, s in enumerate(scores) for i in range(len(s))]
        count = min(count, len(owner))
        # Stable sort by descending score: ties keep the lower layer and index.
        order = sorted(range(len(owner)), key=lambda u: -float(flat[u]))[:count]
        keep: dict[int, list[int]] = {layer: [] for layer in range(L)}
        for u in order:
            keep[owner[u][0]].append(owner[u][1])
        return {layer: sorted(ids) for layer, ids in keep.items()}

    heads = top(normalise_per_layer(importance.heads), math.floor(share * all_heads))
    neurons = top(normalise_per_layer(importance.neurons), math.floor(share * all_neurons))
    return heads, neurons


def prune_to(model: Any, head_keep: dict[int, list[int]], neuron_keep: dict[int, list[int]]) -> Any:
    """A new, physically smaller model keeping, in layer l, the heads `head_keep[l]` and the
    FFN neurons `neuron_keep[l]` (indices into the model's current heads and neurons; a layer
    not in a dict keeps all of them). The result computes what `model` computes with the
    other heads and neurons gated to 0."""
    import torch

    model = from_bert(model)
    config = copy.deepcopy(model.config)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    d = config.head_dim
    for layer_id, layer in enumerate(model.layers):
        heads = sorted(head_keep.get(layer_id, range(layer.attention.self.num_heads)))
        neurons = sorted(neuron_keep.get(layer_id, range(layer.ffn_size)))
        if len(set(heads)) != len(heads) or any(
            not 0 <= h < layer.attention.self.num_heads for h in heads
        ):
            raise ValueError(f"layer {layer_id}: head indices {heads} are not distinct heads.")
        if len(set(neurons)) != len(neurons) or any(not 0 <= i < layer.ffn_size for i in neurons):
            raise ValueError(f"layer {layer_id}: neuron indices are not distinct neurons.")
        rows = torch.tensor([h * d + j for h in heads for j in range(d)], dtype=torch.long)
        cols = torch.tensor(neurons, dtype=torch.long)
        p = f"bert.encoder.layer.{layer_id}."
        for name in ("query", "key", "value"):
            for kind in ("weight", "bias"):
                key = f"{p}attention.self.{name}.{kind}"
                state[key] = state[key].index_select(0, rows)  # [h*d, H] / [h*d]
        key = f"{p}attention.output.dense.weight"
        state[key] = state[key].index_select(1, rows)  # [H, h*d]
        for kind in ("weight", "bias"):
            key = f"{p}intermediate.dense.{kind}"
            state[key] = state[key].index_select(0, cols)  # [I, H] / [I]
        key = f"{p}output.dense.weight"
        state[key] = state[key].index_select(1, cols)  # [H, I]
        config.heads_per_layer[layer_id] = len(heads)
        config.intermediate_per_layer[layer_id] = len(neurons)
    smaller = type(model)(config)
    smaller.load_state_dict(state, strict=True)
    smaller.to(next(model.parameters()).dtype)
    return smaller.train(model.training)


# --- recovery -----------------------------------------------------------------------------


def recovery_step(student: Any, teacher: Any, enc: Encoded, kind: Any, hidden_weight: float) -> Any:
    """The training loop's step function of recovery: distillation of `teacher` (the
    unpruned model, in eval mode, never trained) into `student` on the examples of `enc`:
    `kind.logit_loss` on the logits (a tagger: soft KL at each word's first sub-token) plus
    `hidden_weight` x MSE between all hidden states."""
    import torch

    from lmshrink.data.batching import collate
    from lmshrink.data.task_kinds import IGNORE_INDEX
    from lmshrink.distillation.losses import build_loss
    from lmshrink.distillation.soft_targets import soft_kl

    H, L = student.config.hidden_size, student.config.num_hidden_layers
    logit_loss = None if kind.token_level else build_loss(kind.logit_loss)
    pairs = [(i, i) for i in range(L + 1)]
    hidden_loss = build_loss("hidden_mse", student_dim=H, teacher_dim=H, pairs=pairs)
    teacher.eval()

    def step(model: Any, indices: list[int]) -> tuple[Any, dict[str, Any]]:
        batch = collate(enc, indices)
        labels = batch.pop("labels", None)
        with torch.no_grad():
            target = teacher(**batch, output_hidden_states=True)
        out = model(**batch, output_hidden_states=True)
        if logit_loss is None:
            # A tagger: KL at each word's first sub-token, where tags are read (every real
            # token when the rows carry no tags).
            at = labels.ne(IGNORE_INDEX) if labels is not None else batch["attention_mask"].bool()
            loss = soft_kl(out.logits[at], target.logits[at], temperature=1.0)
        else:
            loss = logit_loss(student_logits=out.logits, teacher_logits=target.logits)
        loss = loss + hidden_weight * hidden_loss(
            student_hidden_states=out.hidden_states,
            teacher_hidden_states=target.hidden_states,
            attention_mask=batch["attention_mask"],
        )
        return loss, {"loss": loss.detach()}

    return step


def with_shape(model: Any, heads_per_layer: list[int], intermediate_per_layer: list[int]) -> Any:
    """A new pruned model shaped like `model` (a pruned model) but with the given heads and FFN
    neurons per layer (fresh weights: load a pruned state into it)."""
    config = copy.deepcopy(model.config)
    config.heads_per_layer = list(heads_per_layer)
    config.intermediate_per_layer = list(intermediate_per_layer)
    shaped = type(model)(config)
    shaped.to(next(model.parameters()).dtype)
    return shaped.train(model.training)
