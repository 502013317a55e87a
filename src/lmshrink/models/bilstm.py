"""The BiLSTM students (XtremeDistil): teacher token ids -> trimmed embeddings -> BiLSTM -> head.

Two heads share one config class and one encoder: `BiLSTMForSequenceClassification` pools the
token states into a sentence vector; `BiLSTMForTokenClassification` classifies every token
(NER), and may also read each word's shape (`shape_dim`, `word_shape_ids`), which an uncased
teacher's ids have lost.

The student reads the *teacher tokenizer's* ids, so it is served with the teacher's saved
tokenizer whatever its family (WordPiece, BPE, SentencePiece). A persistent buffer
`token_map [teacher_vocab_size]` maps each teacher id to a row of the student's own, much
smaller embedding table (only the tokens seen in the transfer data are kept; every other id
maps to `unk_row`). The buffer is saved with the weights, so a `save_pretrained` folder holds
everything needed, and `AutoModelForSequenceClassification.from_pretrained(folder)` loads it
(or `AutoModelForTokenClassification`) loads it once `register_auto()` has run
(`import lmshrink` arranges that).

Each BiLSTM layer is its own `nn.LSTM` so that training stages can unfreeze layer by layer
(`layer_groups`). Inputs are packed, so a prediction does not depend on how much padding its
batch has, and pooling (and the token loss) looks at valid positions only.

ONNX export (`lmshrink.export`) traces the packed path: the TorchScript exporter turns
`pack_padded_sequence` around each `nn.LSTM` into one ONNX `LSTM` node whose `sequence_lens`
input is each row's length, so ONNX Runtime also runs the reverse direction from each row's
last real token, and an exported student keeps this padding invariance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence
from transformers import PretrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import TokenClassifierOutput
from transformers.utils import ModelOutput

from lmshrink.data.task_kinds import IGNORE_INDEX
from lmshrink.data.word_shapes import NUM_SHAPES
from lmshrink.data.word_shapes import PAD as SHAPE_PAD
from lmshrink.models.head_loss import sequence_classification_loss
from lmshrink.models.teacher_ids import (
    TeacherIdModel,
    check_rows_and_dropout,
    check_teacher_token_ids,
)

POOLINGS = ("max", "mean", "attention")

MODEL_TYPE = "lmshrink_bilstm"


@strict
class BiLSTMConfig(PretrainedConfig):
    """Shape of a BiLSTM student. Fields are dataclass fields, as transformers 5 requires, so
    `save_pretrained`/`from_pretrained` round-trip each of them through config.json.

    Two id spaces meet here: `pad_token_id` (like every `*_token_id`) is a *teacher* token id,
    the id a tokenizer writes into `input_ids`; `pad_row` and `unk_row` are rows of the
    student's own embedding table (`vocab_size` rows).
    """

    model_type = MODEL_TYPE

    vocab_size: int = 30522
    """Rows of the student's own (trimmed) embedding table."""
    teacher_vocab_size: int | None = None
    """Size of the teacher tokenizer's id space (length of `token_map`); None: `vocab_size`."""
    embedding_dim: int = 64
    hidden_size: int = 256
    """LSTM hidden size per direction; the pooled vector has 2 * hidden_size entries."""
    num_layers: int = 1
    dropout: float | int = 0.2
    """Dropout on the embeddings, between LSTM layers, and before the classifier."""
    pooling: str = "max"
    """How token states become one vector: max, mean, or attention (learned scoring)."""
    type_vocab_size: int = 2
    """Segment embeddings added for sentence pairs (token_type_ids); 0 disables them."""
    pad_token_id: int | None = 0
    """The teacher tokenizer's pad id (teacher id space, as in every HF config)."""
    pad_row: int = 0
    """Student embedding row of the pad token (the embedding's padding_idx)."""
    unk_row: int = 0
    """Student embedding row used for teacher ids outside the kept vocabulary."""
    shape_dim: int = 16
    """Token model: width of the word-shape embedding joined to each token's embedding, so
    the LSTM reads `embedding_dim + shape_dim` values per token; 0: no word shapes (and no
    `word_shape_ids` input). The sentence model has no word input and ignores it (the
    bilstm family writes 0 into a sentence student's config)."""
    shape_vocab_size: int = NUM_SHAPES
    """Rows of the word-shape table: the shape ids of `lmshrink.data.word_shapes`."""

    def __post_init__(self, **kwargs: Any) -> None:
        if self.teacher_vocab_size is None:
            self.teacher_vocab_size = self.vocab_size
        # Checked here (not in a strict `validate_*` method) so that bad values raise a plain
        # ValueError when the config is built.
        if self.pooling not in POOLINGS:
            raise ValueError(
                f"pooling {self.pooling!r} is unknown; use one of {', '.join(POOLINGS)}."
            )
        for name in ("vocab_size", "teacher_vocab_size", "embedding_dim", "hidden_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {self.num_layers}.")
        if self.type_vocab_size < 0:
            raise ValueError(f"type_vocab_size must be >= 0, got {self.type_vocab_size}.")
        if self.shape_dim < 0:
            raise ValueError(f"shape_dim must be >= 0, got {self.shape_dim}.")
        if self.shape_vocab_size < 1:
            raise ValueError(f"shape_vocab_size must be at least 1, got {self.shape_vocab_size}.")
        check_rows_and_dropout(self)
        super().__post_init__(**kwargs)

    @property
    def pooled_size(self) -> int:
        """Size of the sentence vector `pooled` (both directions' states): 2 * hidden_size;
        also the width of each token's state in the token model."""
        return 2 * self.hidden_size

    def validate_token_ids(self) -> None:
        """Token ids (`*_token_id`) live in the teacher's id space, not the student's rows;
        the base check would compare them with `vocab_size` and warn wrongly."""
        check_teacher_token_ids(self)


@dataclass
class StudentOutput(ModelOutput):
    """Output of a student: `loss` (when labels are given), `logits [B, C]`, and `pooled
    [B, 2H]`, the sentence vector the classifier reads (before its dropout), which
    representation losses match to the teacher's in the first distillation stage."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    pooled: torch.Tensor | None = None


class BiLSTMPreTrainedModel(TeacherIdModel):
    """What both BiLSTM heads share: the teacher-id embedding and BiLSTM encoder, weight
    initialisation, loading and layer groups. A head adds its own modules after calling
    `_build_encoder` (the order of modules fixes the order of random initialisation)."""

    config_class = BiLSTMConfig

    def _build_encoder(self, config: BiLSTMConfig, shape_dim: int) -> None:
        """token_map, word (and segment, and with `shape_dim` word-shape) embeddings,
        dropout and the LSTM layers; the first layer reads `embedding_dim + shape_dim`."""
        E, H = config.embedding_dim, config.hidden_size
        # teacher id -> student row; saved with the weights (persistent), set by build_bilstm.
        self.register_buffer(
            "token_map", torch.zeros(config.teacher_vocab_size, dtype=torch.long), persistent=True
        )
        self.embeddings = nn.Embedding(config.vocab_size, E, padding_idx=config.pad_row)
        self.token_type_embeddings = (
            nn.Embedding(config.type_vocab_size, E) if config.type_vocab_size > 0 else None
        )
        self.shape_embeddings = (
            nn.Embedding(config.shape_vocab_size, shape_dim, padding_idx=SHAPE_PAD)
            if shape_dim > 0
            else None
        )
        self.dropout = nn.Dropout(float(config.dropout))
        self.lstm = nn.ModuleList(
            nn.LSTM(E + shape_dim if i == 0 else 2 * H, H, batch_first=True, bidirectional=True)
            for i in range(config.num_layers)
        )

    # --- weights ----------------------------------------------------------------------------

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Fresh weights for a model built from a config. `from_pretrained` calls this only
        for tensors it did not load: the `transformers.initialization` functions skip any
        tensor marked as loaded, and the slice writes below check that mark themselves."""
        if module is self:
            init.copy_(self.token_map, self.default_token_map().to(self.token_map.device))
        elif module is self.embeddings or module is self.shape_embeddings:
            # PyTorch's default N(0, 1); build_bilstm overwrites the word table with the
            # teacher's rows and scales the shape table to match it.
            init.normal_(module.weight, mean=0.0, std=1.0)
            if module.padding_idx is not None and not _loaded(module.weight):
                module.weight[module.padding_idx].zero_()
        elif module is self.token_type_embeddings:
            # Zero: segments start as a no-op, so teacher-initialised word vectors are unchanged.
            init.zeros_(module.weight)
        elif isinstance(module, nn.LSTM):
            H = module.hidden_size
            for name, param in module.named_parameters():
                if name.startswith("weight_ih"):
                    init.xavier_uniform_(param)
                elif name.startswith("weight_hh"):
                    init.orthogonal_(param)
                elif name.startswith("bias"):
                    init.zeros_(param)
                    # Forget-gate bias 1 (gate order i, f, g, o): remember by default.
                    if name.startswith("bias_ih") and not _loaded(param):
                        param[H : 2 * H].fill_(1.0)
        elif module is getattr(self, "attention", None):
            # Zero scores: attention pooling starts as mean pooling, and still gets gradients.
            init.zeros_(module.weight)
        elif module is getattr(self, "classifier", None):
            init.normal_(module.weight, mean=0.0, std=0.02)
            init.zeros_(module.bias)

    def layer_groups(self) -> list[tuple[str, list[nn.Module]]]:
        """Named groups of modules, bottom-up, for gradual unfreezing: "embeddings" (word,
        segment and word-shape), "lstm.0" ... "lstm.{n-1}", "pooler" (only with attention
        pooling: the scoring vector, which shapes `pooled`), then "classifier" (reads
        `pooled`, or each token's state, so it gets no gradient from losses on those alone).
        Every parameter is in exactly one group; `token_map` is a buffer, never trained."""
        embeddings: list[nn.Module] = [self.embeddings]
        for extra in (self.token_type_embeddings, self.shape_embeddings):
            if extra is not None:
                embeddings.append(extra)
        groups = [("embeddings", embeddings)]
        groups += [(f"lstm.{i}", [layer]) for i, layer in enumerate(self.lstm)]
        attention = getattr(self, "attention", None)
        if attention is not None:
            groups.append(("pooler", [attention]))
        groups.append(("classifier", [self.classifier]))
        return groups

    # --- the encoder ------------------------------------------------------------------------

    def _encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        word_shape_ids: torch.Tensor | None = None,
        keep_layers: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Teacher ids [B, T] (right-padded) -> (states [B, T, 2H], valid [B, T], lengths [B],
        layers): `layers` is empty, or with `keep_layers` the LSTM's input [B, T, E (+S)]
        followed by each layer's output [B, T, 2H] (Hugging Face's `hidden_states` order).
        States at padded positions are 0. `word_shape_ids [B, T]` is read only by a model
        with a shape table."""
        T = input_ids.shape[1]
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        mask = attention_mask.bool()  # [B, T]
        counts = mask.sum(dim=1)  # [B]
        positions = torch.arange(T, device=input_ids.device)  # [T]
        # While tracing (ONNX export) a data-dependent check or branch would be frozen to the
        # example batch's outcome: skip the check, and always trace the general packed path.
        tracing = torch.jit.is_tracing()
        if not tracing and not torch.equal(positions[None, :] < counts[:, None], mask):
            raise ValueError(
                "attention_mask must mark a prefix of each row (right padding); set the "
                "tokenizer's padding_side to 'right'."
            )
        # A row with no tokens at all gets length 1 (packing refuses 0); it reads its first
        # position, which is harmless and keeps the batch shape.
        lengths = counts.clamp(min=1)  # [B]
        valid = positions[None, :] < lengths[:, None]  # [B, T]

        rows = self.token_map[input_ids]  # [B, T] student rows
        x = self.embeddings(rows)  # [B, T, E]
        if self.token_type_embeddings is not None and token_type_ids is not None:
            x = x + self.token_type_embeddings(token_type_ids)  # [B, T, E]
        if self.shape_embeddings is not None:
            if word_shape_ids is None:
                raise ValueError(
                    "this BiLSTM reads word shapes (shape_dim > 0) but got no word_shape_ids; "
                    "encode its inputs with encode_words(..., word_shapes=True)."
                )
            x = torch.cat([x, self.shape_embeddings(word_shape_ids)], dim=-1)  # [B, T, E+S]
        x = self.dropout(x)
        layers = [x] if keep_layers else []

        if not tracing and bool(valid.all()):
            # No padding (always so at batch 1, the serving case): packing would only add
            # overhead, and the plain run is the same computation.
            states = x
            for i, lstm in enumerate(self.lstm):
                if i > 0:
                    states = self.dropout(states)
                states, _ = lstm(states)  # [B, T, 2H]
                if keep_layers:
                    layers.append(states)
        else:
            # Packing runs each sequence for exactly its length, in both directions, so the
            # result does not depend on the padding that other rows of the batch caused.
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            for i, lstm in enumerate(self.lstm):
                if i > 0:
                    packed = _map_packed(packed, self.dropout)
                packed, _ = lstm(packed)
                if keep_layers and i < len(self.lstm) - 1:
                    layers.append(pad_packed_sequence(packed, batch_first=True, total_length=T)[0])
            states, _ = pad_packed_sequence(packed, batch_first=True, total_length=T)  # [B, T, 2H]
            if keep_layers:
                layers.append(states)
        return states, valid, lengths, layers


def _as_output(model: PreTrainedModel, output: ModelOutput, return_dict: bool | None) -> Any:
    """`output`, or its tuple when `return_dict` (or the config) asks for tuples."""
    if return_dict is False or (return_dict is None and model.config.return_dict is False):
        return output.to_tuple()
    return output


class BiLSTMForSequenceClassification(BiLSTMPreTrainedModel):
    """A BiLSTM sentence classifier over the teacher tokenizer's ids (see the module doc)."""

    def __init__(self, config: BiLSTMConfig) -> None:
        super().__init__(config)
        if config.pooling not in POOLINGS:  # a config edited after it was built
            raise ValueError(
                f"pooling {config.pooling!r} is unknown; use one of {', '.join(POOLINGS)}."
            )
        H = config.hidden_size
        self._build_encoder(config, shape_dim=0)  # sentences have no words to shape
        # Attention pooling scores each position with one learned vector.
        self.attention = nn.Linear(2 * H, 1, bias=False) if config.pooling == "attention" else None
        self.classifier = nn.Linear(2 * H, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **ignored: Any,
    ) -> StudentOutput | tuple[torch.Tensor, ...]:
        """input_ids [B, T] (teacher ids, right-padded), attention_mask [B, T] (1 = token),
        token_type_ids [B, T], labels [B] (class ids, or floats for regression).

        Other keyword arguments (e.g. `output_hidden_states` from generic callers) are
        accepted and ignored.
        """
        states, valid, lengths, _ = self._encode(input_ids, attention_mask, token_type_ids)
        pooled = self._pool(states, valid, lengths)  # [B, 2H]
        logits = self.classifier(self.dropout(pooled))  # [B, C]
        loss = None if labels is None else sequence_classification_loss(logits, labels, self.config)
        return _as_output(self, StudentOutput(loss=loss, logits=logits, pooled=pooled), return_dict)

    def _pool(
        self, states: torch.Tensor, valid: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """states [B, T, 2H], valid [B, T], lengths [B] -> [B, 2H] over valid positions only."""
        pooling = self.config.pooling
        if pooling == "max":
            masked = states.masked_fill(~valid[:, :, None], float("-inf"))  # [B, T, 2H]
            return masked.max(dim=1).values
        if pooling == "mean":
            summed = (states * valid[:, :, None]).sum(dim=1)  # [B, 2H]
            return summed / lengths[:, None].to(states.dtype)
        scores = self.attention(states).squeeze(-1)  # [B, T]
        scores = scores.masked_fill(~valid, float("-inf"))
        weights = torch.softmax(scores, dim=1)  # [B, T]
        return torch.einsum("bt,bth->bh", weights, states)


class BiLSTMForTokenClassification(BiLSTMPreTrainedModel):
    """A BiLSTM tagger: one row of logits per teacher token (NER reads each word's first
    sub-token), optionally reading each word's shape (`config.shape_dim`)."""

    def __init__(self, config: BiLSTMConfig) -> None:
        super().__init__(config)
        self._build_encoder(config, shape_dim=config.shape_dim)
        self.classifier = nn.Linear(2 * config.hidden_size, config.num_labels)
        self.post_init()

    @property
    def reads_word_shapes(self) -> bool:
        """Whether its inputs must carry `word_shape_ids` (`encode(..., word_shapes=True)`)."""
        return self.shape_embeddings is not None

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        word_shape_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **ignored: Any,
    ) -> TokenClassifierOutput | tuple[torch.Tensor, ...]:
        """input_ids [B, T] (teacher ids, right-padded), attention_mask [B, T] (1 = token),
        token_type_ids [B, T], word_shape_ids [B, T] (needed when `shape_dim > 0`, else
        ignored), labels [B, T] (tag ids; IGNORE_INDEX -100 where no word starts).

        Returns `logits [B, T, C]`; `loss`, the cross-entropy averaged over the labelled
        real positions (labels != -100 and attention_mask 1), when labels are given; and with
        `output_hidden_states`, `hidden_states`: the LSTM's input [B, T, E (+S)] then each
        layer's states [B, T, 2H], so `hidden_states[-1]` is every token's final state (0 at
        padding). Other keyword arguments (e.g. `output_attentions`) are ignored.
        """
        if output_hidden_states is None:
            output_hidden_states = bool(self.config.output_hidden_states)
        states, valid, _, layers = self._encode(
            input_ids, attention_mask, token_type_ids, word_shape_ids, output_hidden_states
        )
        logits = self.classifier(self.dropout(states))  # [B, T, C]
        loss = None if labels is None else token_classification_loss(logits, labels, valid)
        output = TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=tuple(layers) if layers else None
        )
        return _as_output(self, output, return_dict)


def token_classification_loss(
    logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of logits [B, T, C] with labels [B, T], averaged over the positions that
    are valid [B, T] and labelled (not IGNORE_INDEX -100). With none, a zero that keeps the
    graph (a batch without labels must not turn the loss into NaN)."""
    labels = labels.to(logits.device).masked_fill(~valid, IGNORE_INDEX)  # [B, T]
    picked = labels != IGNORE_INDEX  # [B, T]
    if not bool(picked.any()):
        return logits.sum() * 0.0
    return nn.functional.cross_entropy(logits[picked], labels[picked])


def _loaded(tensor: torch.Tensor) -> bool:
    """Whether from_pretrained filled this tensor from the checkpoint (do not overwrite)."""
    return bool(getattr(tensor, "_is_hf_initialized", False))


def _map_packed(packed: PackedSequence, fn: nn.Module) -> PackedSequence:
    """Apply an elementwise module to the data of a packed sequence, keeping its layout."""
    return PackedSequence(
        fn(packed.data), packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices
    )


def register_auto() -> None:
    """Register the BiLSTM students with AutoConfig, AutoModelForSequenceClassification and
    AutoModelForTokenClassification, so `from_pretrained(folder)` on a saved student returns
    its class. Safe to call again."""
    from transformers.models.auto.configuration_auto import AutoConfig
    from transformers.models.auto.modeling_auto import (
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
    )

    AutoConfig.register(MODEL_TYPE, BiLSTMConfig, exist_ok=True)
    AutoModelForSequenceClassification.register(
        BiLSTMConfig, BiLSTMForSequenceClassification, exist_ok=True
    )
    AutoModelForTokenClassification.register(
        BiLSTMConfig, BiLSTMForTokenClassification, exist_ok=True
    )
