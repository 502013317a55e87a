"""The pruned BERT architecture: a BERT-family classifier (BERT, MiniLM, RoBERTa, XLM-R) whose
layers have their own head counts and FFN sizes, with physically smaller weight matrices,
loadable the usual way.

Structured pruning only pays off when the removed heads and neurons leave the weight
matrices: masking keeps the compute. `PrunedBertForSequenceClassification` is BERT (the same
embeddings, post-LayerNorm layers, pooler and classifier, and the same state-dict keys as
`BertForSequenceClassification`) except that layer `l` has `heads_per_layer[l]` attention
heads and `intermediate_per_layer[l]` FFN neurons:

    attention.self.query/key/value   weight [h_l * d, H]   (d = hidden_size / num_attention_heads)
    attention.output.dense           weight [H, h_l * d]
    intermediate.dense               weight [I_l, H]
    output.dense                     weight [H, I_l]

A layer with 0 heads keeps only its attention output bias and LayerNorm: its attention block
computes `LayerNorm(x + b)`, which is exactly what the unpruned layer computes with every head
masked, so pruning stays a pure function of the masks. Likewise for 0 FFN neurons. Whole-layer
removal is therefore "all heads and all neurons pruned": the layer then costs two bias adds
and two LayerNorms, and the layer list (and `num_hidden_layers`) keeps its length, so hidden
state i still lines up with the teacher's hidden state i for distillation losses. Dropping a
layer from the list instead would change the function (its LayerNorms go too) and the layer
mapping; it is not supported here.

**RoBERTa** (and XLM-R) has the same layers; it differs only around them, which
`config.family = "roberta"` reproduces: positions are numbered from `pad_token_id + 1` over
the non-padding tokens (padding gets position `pad_token_id`, whose embedding row gets no
gradient), there is usually a single token type (`type_vocab_size` 1), and the head is
`out_proj(dropout(tanh(dense(dropout(<s> state)))))`, i.e. BERT's pooler and classifier with
one more dropout before the dense layer. `lmshrink.prune.from_bert` converts it with its keys
renamed to BERT's: `roberta.*` -> `bert.*`, `classifier.dense` -> `bert.pooler.dense`,
`classifier.out_proj` -> `classifier`; the logits are the same.

`forward` takes optional gates, `head_mask` (one [h_l] tensor per layer, multiplied into each
head's context vector) and `neuron_mask` (one [I_l] tensor per layer, multiplied into the FFN
activations). With gates that require grad, `|dL/d gate|` is the head importance of Michel et
al. (2019) and the first-order Taylor importance of FFN neurons (`lmshrink.prune`).

`PrunedBertForTokenClassification` is the same with BERT's token head (dropout and a linear
layer on every token's last state, no pooler), for NER taggers (RoBERTa's token head is the
same layer, `classifier`).

`import lmshrink` registers the config and models with `AutoConfig`,
`AutoModelForSequenceClassification` and `AutoModelForTokenClassification` (`register_auto`,
run lazily by `lmshrink.models.autoregister`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import SequenceClassifierOutput, TokenClassifierOutput

from lmshrink.models.head_loss import sequence_classification_loss

MODEL_TYPE = "lmshrink_pruned_bert"
FAMILIES = ("bert", "roberta")


@strict
class PrunedBertConfig(PretrainedConfig):
    """BertConfig's fields plus the size of each layer after pruning.

    `num_attention_heads` and `intermediate_size` keep the unpruned values: the head width is
    `hidden_size // num_attention_heads` whatever a layer keeps, and a fresh config (lists
    left empty) describes an unpruned BERT.

    It repeats BERT's fields rather than subclassing `BertConfig`, and this module imports
    nothing from `transformers.models.bert`: the Auto registration runs while transformers
    may be in the middle of importing the BERT modules (their docstring decorator loads the
    Auto API), and importing them again from there would fail.
    """

    model_type = MODEL_TYPE

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    classifier_dropout: float | int | None = None
    is_decoder: bool = False
    add_cross_attention: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    tie_word_embeddings: bool = True
    use_cache: bool = False
    family: str = "bert"
    """The architecture converted: "bert" (BERT, MiniLM) or "roberta" (RoBERTa, XLM-R)."""
    heads_per_layer: list[int] | None = None
    """Attention heads kept in each layer (0: the layer has no attention matmuls)."""
    intermediate_per_layer: list[int] | None = None
    """FFN neurons kept in each layer (0: the layer has no FFN matmuls)."""

    def __post_init__(self, **kwargs: Any) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}.")
        if self.family == "roberta" and self.pad_token_id is None:
            raise ValueError("a RoBERTa-family model needs pad_token_id (positions count from it).")
        L = self.num_hidden_layers
        if not self.heads_per_layer:
            self.heads_per_layer = [self.num_attention_heads] * L
        if not self.intermediate_per_layer:
            self.intermediate_per_layer = [self.intermediate_size] * L
        for name, limit in (
            ("heads_per_layer", self.num_attention_heads),
            ("intermediate_per_layer", self.intermediate_size),
        ):
            values = [int(v) for v in getattr(self, name)]
            if len(values) != L:
                raise ValueError(f"{name} has {len(values)} entries but the model has {L} layers.")
            if any(not 0 <= v <= limit for v in values):
                raise ValueError(f"{name} entries must be between 0 and {limit}, got {values}.")
            setattr(self, name, values)
        super().__post_init__(**kwargs)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


def _linear(n_in: int, n_out: int) -> nn.Linear:
    """nn.Linear, quiet about the zero-size weights of a layer pruned to nothing."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        return nn.Linear(n_in, n_out)


class PrunedSelfAttention(nn.Module):
    """Multi-head self-attention over `num_heads` heads of width `head_dim`."""

    def __init__(self, config: PrunedBertConfig, num_heads: int) -> None:
        super().__init__()
        self.config = config
        self.num_heads = num_heads
        self.head_dim = config.head_dim
        width = num_heads * self.head_dim
        self.query = _linear(config.hidden_size, width)
        self.key = _linear(config.hidden_size, width)
        self.value = _linear(config.hidden_size, width)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        head_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x [B, T, H], mask [B, 1, 1, T] additive (0 or dtype min), head_mask [h] ->
        (context [B, T, h*d], probabilities [B, h, T, T] or None)."""
        B, T, _ = x.shape
        h, d = self.num_heads, self.head_dim
        q = self.query(x).view(B, T, h, d).transpose(1, 2)  # [B, h, T, d]
        k = self.key(x).view(B, T, h, d).transpose(1, 2)  # [B, h, T, d]
        v = self.value(x).view(B, T, h, d).transpose(1, 2)  # [B, h, T, d]
        scaling = d**-0.5
        sdpa = getattr(self.config, "_attn_implementation", "eager") == "sdpa"
        probs = None
        if sdpa and head_mask is None and not output_attentions:
            p = self.dropout.p if self.training else 0.0
            context = nn.functional.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=p, scale=scaling
            )  # [B, h, T, d]
        else:
            scores = torch.matmul(q, k.transpose(2, 3)) * scaling  # [B, h, T, T]
            if mask is not None:
                scores = scores + mask
            probs = torch.softmax(scores, dim=-1)
            context = torch.matmul(self.dropout(probs), v)  # [B, h, T, d]
            if head_mask is not None:
                context = context * head_mask[None, :, None, None].to(context.dtype)
        context = context.transpose(1, 2).reshape(B, T, h * d)  # [B, T, h*d]
        return context, probs if output_attentions else None


class PrunedAttention(nn.Module):
    """Self-attention, its output projection, residual and LayerNorm (BERT's BertAttention)."""

    def __init__(self, config: PrunedBertConfig, num_heads: int) -> None:
        super().__init__()
        self.self = PrunedSelfAttention(config, num_heads)
        self.output = _ResidualOutput(config, num_heads * config.head_dim)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        head_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x [B, T, H] -> (LayerNorm(x + dense(context)) [B, T, H], probabilities or None)."""
        if self.self.num_heads == 0:
            # No head left: the block adds its output bias (what masking every head gives).
            return self.output.bias_only(x), None
        context, probs = self.self(x, mask, head_mask, output_attentions)
        return self.output(context, x), probs


class _ResidualOutput(nn.Module):
    """dense [H, width] -> dropout -> LayerNorm(. + residual), as BERT's *Output modules."""

    def __init__(self, config: PrunedBertConfig, width: int) -> None:
        super().__init__()
        self.dense = _linear(width, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """hidden [B, T, width], residual [B, T, H] -> [B, T, H]."""
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)

    def bias_only(self, residual: torch.Tensor) -> torch.Tensor:
        """The output when `width` is 0: residual [B, T, H] -> LayerNorm(residual + bias)."""
        return self.LayerNorm(self.dropout(self.dense.bias.expand_as(residual)) + residual)


class _Intermediate(nn.Module):
    """The FFN's first projection and activation: [B, T, H] -> [B, T, I]."""

    def __init__(self, config: PrunedBertConfig, size: int) -> None:
        super().__init__()
        self.dense = _linear(config.hidden_size, size)
        act = config.hidden_act
        self.act = ACT2FN[act] if isinstance(act, str) else act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class PrunedBertLayer(nn.Module):
    """One post-LayerNorm transformer layer with its own head count and FFN size."""

    def __init__(self, config: PrunedBertConfig, num_heads: int, ffn_size: int) -> None:
        super().__init__()
        self.attention = PrunedAttention(config, num_heads)
        self.intermediate = _Intermediate(config, ffn_size)
        self.output = _ResidualOutput(config, ffn_size)
        self.ffn_size = ffn_size

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        head_mask: torch.Tensor | None = None,
        neuron_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x [B, T, H], head_mask [h], neuron_mask [I] -> ([B, T, H], probabilities or None)."""
        attended, probs = self.attention(x, mask, head_mask, output_attentions)  # [B, T, H]
        if self.ffn_size == 0:
            return self.output.bias_only(attended), probs
        inner = self.intermediate(attended)  # [B, T, I]
        if neuron_mask is not None:
            inner = inner * neuron_mask.to(inner.dtype)
        return self.output(inner, attended), probs


class _Encoder(nn.Module):
    def __init__(self, config: PrunedBertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(
            PrunedBertLayer(config, h, i)
            for h, i in zip(config.heads_per_layer, config.intermediate_per_layer, strict=True)
        )


class _Embeddings(nn.Module):
    """BERT's embeddings: LayerNorm(word + segment + position), then dropout. RoBERTa's
    positions start after `pad_token_id` and skip padding (see the module doc)."""

    def __init__(self, config: PrunedBertConfig) -> None:
        super().__init__()
        H = config.hidden_size
        self.roberta_positions = config.family == "roberta"
        self.pad_token_id = config.pad_token_id
        self.word_embeddings = nn.Embedding(config.vocab_size, H, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(
            config.max_position_embeddings,
            H,
            padding_idx=config.pad_token_id if self.roberta_positions else None,
        )
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, H)
        self.LayerNorm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids [B, T], token_type_ids [B, T], position_ids [B or 1, T] -> [B, T, H]."""
        T = input_ids.shape[1]
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if position_ids is None and self.roberta_positions:
            real = input_ids.ne(self.pad_token_id).long()  # [B, T]
            position_ids = torch.cumsum(real, dim=1) * real + self.pad_token_id  # [B, T]
        elif position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device)[None, :]  # [1, T]
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings(position_ids)  # the order BERT adds them in
        return self.dropout(self.LayerNorm(x))


class _Pooler(nn.Module):
    """BERT's pooler: tanh(dense(first token's state)). RoBERTa's head (its `dense`) drops
    that state out first, with the classifier's dropout rate."""

    def __init__(self, config: PrunedBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()
        p = config.classifier_dropout
        p = config.hidden_dropout_prob if p is None else p
        self.dropout = nn.Dropout(p) if config.family == "roberta" else nn.Identity()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [B, T, H] -> [B, H]."""
        return self.activation(self.dense(self.dropout(hidden[:, 0])))


class _Bert(nn.Module):
    """Embeddings, layers and (for a sentence classifier) the pooler under BERT's names
    (`bert.embeddings`, ...)."""

    def __init__(self, config: PrunedBertConfig, pooler: bool = True) -> None:
        super().__init__()
        self.embeddings = _Embeddings(config)
        self.encoder = _Encoder(config)
        if pooler:
            self.pooler = _Pooler(config)


class _PrunedBertModel(PreTrainedModel):
    """What both heads share: the embeddings and the pruned layers, and running them."""

    config_class = PrunedBertConfig
    base_model_prefix = "bert"
    main_input_name = "input_ids"
    _supports_sdpa = True
    _pooler = True  # a sentence head reads BERT's pooler; a token head has none

    def __init__(self, config: PrunedBertConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = _Bert(config, pooler=self._pooler)
        dropout = config.classifier_dropout
        self.dropout = nn.Dropout(config.hidden_dropout_prob if dropout is None else dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.bert.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.bert.embeddings.word_embeddings = value

    @property
    def layers(self) -> nn.ModuleList:
        return self.bert.encoder.layer

    def _run_layers(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        head_mask: Sequence[torch.Tensor] | None,
        neuron_mask: Sequence[torch.Tensor] | None,
        attn_wanted: bool,
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor | None]]:
        """(last states [B, T, H], every hidden state, every layer's attention)."""
        x = self.bert.embeddings(input_ids, token_type_ids, position_ids)  # [B, T, H]
        mask = None
        if attention_mask is not None:
            keep = attention_mask[:, None, None, :].to(x.dtype)  # [B, 1, 1, T]
            mask = (1.0 - keep) * torch.finfo(x.dtype).min  # additive: 0 or dtype min
        hidden: list[torch.Tensor] = [x]
        attentions: list[torch.Tensor | None] = []
        for i, layer in enumerate(self.layers):
            x, probs = layer(
                x,
                mask,
                None if head_mask is None else head_mask[i],
                None if neuron_mask is None else neuron_mask[i],
                attn_wanted,
            )
            hidden.append(x)
            attentions.append(probs)
        return x, hidden, attentions

    def _head(self, states: torch.Tensor, labels: torch.Tensor | None) -> tuple[Any, Any]:
        """(logits, loss or None) from the last states [B, T, H]."""
        raise NotImplementedError

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        head_mask: Sequence[torch.Tensor] | None = None,
        neuron_mask: Sequence[torch.Tensor] | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **ignored: Any,
    ) -> Any:
        """input_ids [B, T], attention_mask [B, T] (1 = token), token_type_ids [B, T],
        labels [B] (a token head: [B, T], IGNORE_INDEX where no word starts); head_mask: per
        layer [h_l], neuron_mask: per layer [I_l] (gates, see the module doc). logits [B, C]
        (a token head: [B, T, C]); hidden_states (when asked): L + 1 tensors [B, T, H],
        embeddings first; attentions: L tensors [B, h_l, T, T] (None for a layer without
        heads)."""
        config = self.config
        hidden_wanted = bool(
            config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        attn_wanted = bool(
            config.output_attentions if output_attentions is None else output_attentions
        )
        x, hidden, attentions = self._run_layers(
            input_ids,
            attention_mask,
            token_type_ids,
            position_ids,
            head_mask,
            neuron_mask,
            attn_wanted,
        )
        logits, loss = self._head(x, labels)
        output = self._output_class(
            loss=loss,
            logits=logits,
            hidden_states=tuple(hidden) if hidden_wanted else None,
            attentions=tuple(attentions) if attn_wanted else None,
        )
        if return_dict is False or (return_dict is None and config.return_dict is False):
            return output.to_tuple()
        return output


class PrunedBertForSequenceClassification(_PrunedBertModel):
    """A BERT-family classifier with per-layer head counts and FFN sizes (RoBERTa's too, with
    `config.family = "roberta"`)."""

    _output_class = SequenceClassifierOutput

    def _head(self, states: torch.Tensor, labels: torch.Tensor | None) -> tuple[Any, Any]:
        pooled = self.bert.pooler(states)  # [B, H]
        logits = self.classifier(self.dropout(pooled))  # [B, C]
        loss = None if labels is None else sequence_classification_loss(logits, labels, self.config)
        return logits, loss


class PrunedBertForTokenClassification(_PrunedBertModel):
    """A BERT-family token tagger (BERT's and RoBERTa's token heads: dropout and a linear
    layer on every token's last state, no pooler) with per-layer head counts and FFN sizes."""

    _output_class = TokenClassifierOutput
    _pooler = False

    def _head(self, states: torch.Tensor, labels: torch.Tensor | None) -> tuple[Any, Any]:
        logits = self.classifier(self.dropout(states))  # [B, T, C]
        loss = None
        if labels is not None:  # IGNORE_INDEX (-100) positions do not count
            loss = nn.functional.cross_entropy(
                logits.view(-1, self.num_labels), labels.to(logits.device).view(-1)
            )
        return logits, loss


def register_auto() -> None:
    """Register the pruned BERT (and RoBERTa) with AutoConfig,
    AutoModelForSequenceClassification and AutoModelForTokenClassification, so
    `from_pretrained(folder)` on a saved pruned model returns its class. Safe to call again."""
    from transformers.models.auto.configuration_auto import AutoConfig
    from transformers.models.auto.modeling_auto import (
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
    )

    AutoConfig.register(MODEL_TYPE, PrunedBertConfig, exist_ok=True)
    AutoModelForSequenceClassification.register(
        PrunedBertConfig, PrunedBertForSequenceClassification, exist_ok=True
    )
    AutoModelForTokenClassification.register(
        PrunedBertConfig, PrunedBertForTokenClassification, exist_ok=True
    )
