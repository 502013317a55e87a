"""The static student family (Model2Vec's idea): token vectors distilled from the teacher.

The student keeps the teacher tokens that occur in its training texts (plus the special
tokens), as the BiLSTM does (`collect_vocab`), and gives each one a fixed vector; a sentence
is the mean of its tokens' vectors, then a small head
(`lmshrink.models.static.StaticForSequenceClassification`).

Where the BiLSTM starts from the teacher's *input* embeddings, a static student has no
context layers to turn them into meaning, so it starts from what the teacher's encoder makes
of each token: the last hidden state at the token's position when the teacher reads the token
alone, wrapped as the tokenizer wraps a sentence (`[CLS] token [SEP]`). Those vectors
(`teacher_token_states`) are reduced to the student's width by PCA (`reduce_embeddings`).
Distillation stages then tune the vectors and train the head.

It labels sentences only: a token-classification teacher is refused (the bilstm family tags
tokens).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from lmshrink.config import option
from lmshrink.errors import ConfigError
from lmshrink.students.bilstm import collect_vocab, kept_vocabulary, reduce_embeddings
from lmshrink.students.common import Student, is_token_classifier, register_student

if TYPE_CHECKING:
    import torch

# Tokens per teacher forward pass when computing the initial vectors: each input is only
# 1-3 tokens long, so a large batch is cheap and keeps the number of passes small.
TOKENS_PER_BATCH = 512


@dataclasses.dataclass
class StaticSettings:
    """The static student's settings (`student:` keys). The defaults are StaticConfig's."""

    embedding_dim: int = option(
        256, "width of each token's vector (the teacher's token states reduced by PCA)."
    )
    hidden_size: int = option(
        0,
        "units of a ReLU hidden layer between the mean token vector and the classifier; "
        "0: none, the classifier reads the mean vector directly (a linear head).",
    )
    dropout: float = option(0.1, "dropout before the classifier.")
    bigram_buckets: int = option(
        0,
        "rows of a hashed table of adjacent token pairs whose mean vector is added to the "
        "tokens' mean (fastText's word n-grams; the rows start at zero); 0: tokens only.",
    )


def wrapping_ids(tokenizer: Any) -> tuple[list[int], list[int]]:
    """(ids before, ids after) a token when the teacher reads it alone: the tokenizer's
    cls/sep ids where it has them, else its bos/eos ids, else nothing (each side on its own,
    so a tokenizer with only a start token gets only that)."""
    first = tokenizer.cls_token_id
    if first is None:
        first = tokenizer.bos_token_id
    last = tokenizer.sep_token_id
    if last is None:
        last = tokenizer.eos_token_id
    return ([] if first is None else [first]), ([] if last is None else [last])


def teacher_token_states(
    teacher: Any,
    tokenizer: Any,
    token_ids: list[int],
    batch_size: int = TOKENS_PER_BATCH,
) -> torch.Tensor:
    """The teacher's vector of each token in `token_ids`: its last hidden state at the
    token's position when it reads the token alone (`wrapping_ids` around it). Returns
    float32 `[len(token_ids), H_teacher]` on the CPU, in the order of `token_ids`.

    Runs `batch_size` tokens per forward pass (every input has the same length, so there is
    no padding), in eval mode under `torch.inference_mode`; the teacher's mode is restored.
    """
    import torch

    before, after = wrapping_ids(tokenizer)
    position = len(before)
    device = next(teacher.parameters()).device
    was_training = teacher.training
    teacher.eval()
    states = []
    try:
        with torch.inference_mode():
            for start in range(0, len(token_ids), batch_size):
                chunk = torch.tensor(token_ids[start : start + batch_size], dtype=torch.long)
                n = len(chunk)
                input_ids = torch.cat(
                    [
                        torch.tensor(before, dtype=torch.long).expand(n, len(before)),
                        chunk[:, None],
                        torch.tensor(after, dtype=torch.long).expand(n, len(after)),
                    ],
                    dim=1,
                ).to(device)  # [n, L]
                out = teacher(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    output_hidden_states=True,
                )
                last = out.hidden_states[-1]  # [n, L, H]
                states.append(last[:, position].to("cpu", torch.float32))  # [n, H]
    finally:
        teacher.train(was_training)
    if not states:
        raise ValueError("no token ids to compute teacher states for.")
    return torch.cat(states)  # [V, H]


@register_student("static", StaticSettings, "mean of fixed token vectors, Model2Vec-style")
def build_static(
    teacher: Any,
    tokenizer: Any,
    texts: list[tuple[str, ...]],
    task_head: dict[str, Any],
    max_length: int,
    settings: StaticSettings,
) -> Student:
    """A static student for a sentence-classification `teacher`, reading the teacher
    tokenizer's ids.

    `texts` are the training inputs (tuples of 1 or 2 fields). Its embedding table holds one
    row per teacher token seen in `texts` (`collect_vocab`, special tokens included), in id
    order, each initialised with the PCA (`reduce_embeddings`) of the teacher's state of that
    token (`teacher_token_states`); every other teacher id maps to the unknown token's row
    (the pad token's row if the tokenizer has no unknown token). `task_head` holds the head's
    config entries (`lmshrink.models.loading.task_head_settings(task)`). Head weights are
    random: seed torch beforehand for a reproducible student. What representation losses
    match is its `pooled` mean vector; it has no per-token states for layer-wise losses.
    """
    import torch

    from lmshrink.models.static import StaticConfig, StaticForSequenceClassification

    if is_token_classifier(teacher):
        raise ConfigError(
            "the static student labels whole sentences, but the teacher is a token classifier "
            f"({type(teacher).__name__}); use the bilstm student (or a transformer student) "
            "for token tasks."
        )
    if settings.hidden_size < 0:
        raise ConfigError(
            f"hidden_size must be 0 (a linear head) or a width, got {settings.hidden_size}."
        )
    if settings.bigram_buckets < 0:
        raise ConfigError(
            f"bigram_buckets must be 0 (tokens only) or a number of rows, got "
            f"{settings.bigram_buckets}."
        )
    embedding_rows = teacher.get_input_embeddings().weight.shape[0]
    kept = collect_vocab(tokenizer, texts, max_length)
    vocab = kept_vocabulary(tokenizer, kept, embedding_rows)
    config = StaticConfig(
        **vocab.config_entries(tokenizer), **task_head, **dataclasses.asdict(settings)
    )
    model = StaticForSequenceClassification(config)
    states = teacher_token_states(teacher, tokenizer, kept)  # [V, H_teacher]
    reduced = reduce_embeddings(states, config.embedding_dim)  # [V, E]
    with torch.no_grad():
        model.embeddings.weight.copy_(reduced)
        model.token_map.copy_(vocab.token_map)
    return Student(
        model=model,
        tokenizer=tokenizer,
        layer_groups=model.layer_groups(),
        token_states=False,
        teacher_tokenizer=True,
    )
