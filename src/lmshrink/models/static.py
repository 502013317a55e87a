"""The static student (Model2Vec's idea): one fixed vector per teacher token, averaged.

A sentence is the mean of its tokens' vectors; a small head (a linear classifier, or one
ReLU hidden layer and the classifier) labels it. There is no attention and no recurrence:
the cost of a prediction is a table lookup and a sum, so this is the fastest neural
classifier lmshrink makes, for the tightest latency budgets. The vectors start from the
teacher's contextual state of each token (`lmshrink.students.static`), so word meaning the
teacher learned is there before any training.

A bag of tokens cannot tell "not good, just bad" from "not bad, just good". With
`bigram_buckets` set, each pair of adjacent tokens also reads a vector from a second table,
at a hashed row (fastText's word n-grams), and the pairs' mean is added to the tokens' mean:
one more lookup and sum, and word order inside a pair counts.

Like the BiLSTM, the student reads the *teacher tokenizer's* ids: a persistent buffer
`token_map [teacher_vocab_size]` sends each teacher id to a row of the student's own, smaller
embedding table (the tokens seen in the training texts; every other id maps to `unk_row`).
The buffer is saved with the weights, so `AutoModelForSequenceClassification.from_pretrained`
loads a saved student once `register_auto()` has run (`import lmshrink` arranges that).

Pooling reads real tokens only (`attention_mask` 1), so a prediction does not depend on the
padding of its batch, and the model has no data-dependent branch: the TorchScript tracer of
`lmshrink.compress.onnx` exports it as a few Gather, Mul and ReduceSum nodes. Segment ids
(`token_type_ids`) carry nothing a bag of tokens could use; `forward` accepts and ignores
them (as a keyword it does not name, so the exported graph does not take them either).
"""

from __future__ import annotations

from typing import Any

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import PretrainedConfig
from transformers import initialization as init

from lmshrink.models.bilstm import StudentOutput
from lmshrink.models.head_loss import sequence_classification_loss
from lmshrink.models.pooling import masked_mean
from lmshrink.models.teacher_ids import (
    TeacherIdModel,
    check_rows_and_dropout,
    check_teacher_token_ids,
)

MODEL_TYPE = "lmshrink_static"
# Odd multiplier of the bigram hash (`bigram_rows`): a pair (a, b) of student rows goes to
# bucket (a * BIGRAM_HASH + b) mod bigram_buckets. Rows are below a few hundred thousand, so
# the product stays far inside int64 in PyTorch and in the exported graph.
BIGRAM_HASH = 1_000_003


@strict
class StaticConfig(PretrainedConfig):
    """Shape of a static student. Fields are dataclass fields, as transformers 5 requires, so
    `save_pretrained`/`from_pretrained` round-trip each of them through config.json.

    As in `BiLSTMConfig`, `pad_token_id` is a *teacher* token id; `pad_row` and `unk_row` are
    rows of the student's own embedding table (`vocab_size` rows).
    """

    model_type = MODEL_TYPE

    vocab_size: int = 30522
    """Rows of the student's own (trimmed) embedding table."""
    teacher_vocab_size: int | None = None
    """Size of the teacher tokenizer's id space (length of `token_map`); None: `vocab_size`."""
    embedding_dim: int = 256
    """Width of each token's vector, and so of the sentence vector `pooled`."""
    hidden_size: int = 0
    """Units of the ReLU hidden layer between `pooled` and the classifier; 0: none (the
    classifier reads `pooled` directly, a linear model of the mean vector)."""
    bigram_buckets: int = 0
    """Rows of a second table, for each pair of adjacent tokens (hashed, as fastText's word
    n-grams): `pooled` adds the mean of the pairs' vectors to the mean of the tokens'
    vectors, so that word order inside a pair ("not good") can count. 0: tokens only."""
    dropout: float | int = 0.1
    """Dropout before the classifier (on the hidden layer's output, or on `pooled`)."""
    pad_token_id: int | None = 0
    """The teacher tokenizer's pad id (teacher id space, as in every HF config)."""
    pad_row: int = 0
    """Student embedding row of the pad token (padding is masked out of the mean)."""
    unk_row: int = 0
    """Student embedding row used for teacher ids outside the kept vocabulary."""

    def __post_init__(self, **kwargs: Any) -> None:
        if self.teacher_vocab_size is None:
            self.teacher_vocab_size = self.vocab_size
        # Checked here (not in a strict `validate_*` method) so that bad values raise a plain
        # ValueError when the config is built.
        for name in ("vocab_size", "teacher_vocab_size", "embedding_dim"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        for name, what in (("hidden_size", "no hidden layer"), ("bigram_buckets", "no pairs")):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 ({what}) or more, got {getattr(self, name)}.")
        check_rows_and_dropout(self)
        super().__post_init__(**kwargs)

    @property
    def pooled_size(self) -> int:
        """Size of the sentence vector `pooled`: `embedding_dim` (what representation losses
        project to the teacher's width)."""
        return self.embedding_dim

    def validate_token_ids(self) -> None:
        """Token ids (`*_token_id`) live in the teacher's id space, not the student's rows;
        the base check would compare them with `vocab_size` and warn wrongly."""
        check_teacher_token_ids(self)


class StaticForSequenceClassification(TeacherIdModel):
    """A sentence classifier over the mean of fixed token vectors (see the module doc)."""

    config_class = StaticConfig

    def __init__(self, config: StaticConfig) -> None:
        super().__init__(config)
        E, H = config.embedding_dim, config.hidden_size
        # teacher id -> student row; saved with the weights (persistent), set by build_static.
        self.register_buffer(
            "token_map", torch.zeros(config.teacher_vocab_size, dtype=torch.long), persistent=True
        )
        # No padding_idx: the pad token keeps its own (teacher-derived) vector; padded
        # positions are masked out of the mean, so that row never reaches a prediction.
        self.embeddings = nn.Embedding(config.vocab_size, E)
        buckets = config.bigram_buckets
        self.bigrams = nn.Embedding(buckets, E) if buckets > 0 else None
        self.hidden = nn.Linear(E, H) if H > 0 else None
        self.dropout = nn.Dropout(float(config.dropout))
        self.classifier = nn.Linear(H if H > 0 else E, config.num_labels)
        self.post_init()

    # --- weights ----------------------------------------------------------------------------

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Fresh weights for a model built from a config; `from_pretrained` calls this only
        for tensors it did not load (the `transformers.initialization` functions skip them)."""
        if module is self:
            init.copy_(self.token_map, self.default_token_map().to(self.token_map.device))
        elif module is self.embeddings:
            # PyTorch's default N(0, 1); build_static overwrites it with the teacher's vectors.
            init.normal_(module.weight, mean=0.0, std=1.0)
        elif module is self.bigrams:
            # Zeros: a new student predicts as its tokens alone do, and training adds what
            # the pairs say.
            init.zeros_(module.weight)
        elif module is self.hidden:
            init.xavier_uniform_(module.weight)
            init.zeros_(module.bias)
        elif module is self.classifier:
            init.normal_(module.weight, mean=0.0, std=0.02)
            init.zeros_(module.bias)

    def layer_groups(self) -> list[tuple[str, list[nn.Module]]]:
        """Named groups of modules, bottom-up, for gradual unfreezing: "embeddings", then
        "classifier" (the hidden layer, when there is one, and the classifier); the pairs'
        table, when there is one, is with the embeddings. Both of the
        latter read `pooled`, so a representation loss on `pooled` gives them no gradient,
        and a representation stage trains the embeddings from its first epoch. Every
        parameter is in exactly one group; `token_map` is a buffer, never trained."""
        head: list[nn.Module] = [self.classifier]
        if self.hidden is not None:
            head.insert(0, self.hidden)
        tables: list[nn.Module] = [self.embeddings]
        if self.bigrams is not None:
            tables.append(self.bigrams)
        return [("embeddings", tables), ("classifier", head)]

    # --- forward ----------------------------------------------------------------------------

    def pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Teacher ids [B, T], attention_mask [B, T] (1 = token) -> the mean of the real
        tokens' vectors [B, E], plus the mean of their adjacent pairs' vectors when the model
        has a bigram table. A row without tokens (or pairs) adds zeros. Any padding side
        works: only the mask says which positions count."""
        rows = self.token_map[input_ids]  # [B, T] student rows
        if attention_mask is None:
            attention_mask = torch.ones_like(rows)
        mask = attention_mask.to(self.embeddings.weight.dtype)  # [B, T]
        pooled = masked_mean(self.embeddings(rows), mask)  # [B, E]
        if self.bigrams is not None:
            pairs = self.bigram_rows(rows[:, :-1], rows[:, 1:])  # [B, T-1]
            pooled = pooled + masked_mean(self.bigrams(pairs), mask[:, :-1] * mask[:, 1:])
        return pooled

    def bigram_rows(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """The bigram table's row of each pair of student rows (`first`, `second`, same
        shape): a hash, so unrelated pairs may share a row (fastText's trade of memory for
        collisions)."""
        return torch.remainder(first * BIGRAM_HASH + second, self.config.bigram_buckets)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **ignored: Any,
    ) -> StudentOutput | tuple[torch.Tensor, ...]:
        """input_ids [B, T] (teacher ids), attention_mask [B, T] (1 = token), labels [B]
        (class ids, or floats for regression).

        Returns `logits [B, C]`, `pooled [B, E]` (the mean token vector, before the head:
        what representation losses match) and, with labels, `loss`. Other keyword arguments
        (`token_type_ids`, `output_hidden_states` from generic callers) are accepted and
        ignored.
        """
        pooled = self.pool(input_ids, attention_mask)  # [B, E]
        features = pooled if self.hidden is None else torch.relu(self.hidden(pooled))  # [B, H]
        logits = self.classifier(self.dropout(features))  # [B, C]
        loss = None if labels is None else sequence_classification_loss(logits, labels, self.config)
        output = StudentOutput(loss=loss, logits=logits, pooled=pooled)
        if return_dict is False or (return_dict is None and self.config.return_dict is False):
            return output.to_tuple()
        return output


def register_auto() -> None:
    """Register the static student with AutoConfig and AutoModelForSequenceClassification,
    so `from_pretrained(folder)` on a saved student returns its class. Safe to call again."""
    from transformers.models.auto.configuration_auto import AutoConfig
    from transformers.models.auto.modeling_auto import AutoModelForSequenceClassification

    AutoConfig.register(MODEL_TYPE, StaticConfig, exist_ok=True)
    AutoModelForSequenceClassification.register(
        StaticConfig, StaticForSequenceClassification, exist_ok=True
    )
