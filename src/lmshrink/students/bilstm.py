"""The BiLSTM student family (XtremeDistil), with word embeddings taken from the teacher's.

The student keeps only the teacher tokens that occur in its training texts (plus the special
tokens), and starts each kept token's vector from the teacher's, reduced to the student's
width by PCA. The student keeps reading teacher ids: `token_map` sends each one to its row.

A teacher that classifies sentences gets `lmshrink.models.bilstm.BiLSTMForSequenceClassification`;
a token classifier (NER) gets `BiLSTMForTokenClassification`, one row of logits per token,
which by default also reads each word's shape (capitals, digits, punctuation: what an
uncased teacher's ids have lost), so its inputs need `encode(..., word_shapes=True)`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from lmshrink.config import option
from lmshrink.errors import ConfigError, ModelError
from lmshrink.students.common import Student, is_token_classifier, register_student

if TYPE_CHECKING:
    import torch

# Texts per tokenizer call: large enough for the fast tokenizer's batching to pay off, small
# enough that the encodings of one chunk stay a few MB.
TOKENIZE_CHUNK = 2048


@dataclasses.dataclass
class BiLSTMSettings:
    """The BiLSTM student's settings (`student:` keys)."""

    # The defaults are recipes/xtremedistil-bilstm.yaml's student (bench/results/
    # sst2_transfer): 3.5x smaller and faster to train than the 300/300 of XtremeDistil's
    # paper, which lmshrink first took.
    embedding_dim: int = option(
        64, "word embedding size (the teacher's embeddings reduced by PCA)."
    )
    hidden_size: int = option(256, "LSTM units per direction.")
    num_layers: int = option(1, "number of BiLSTM layers.")
    dropout: float = option(
        0.2, "dropout on embeddings, between LSTM layers and before the classifier."
    )
    pooling: str = option("max", "max, mean or attention (sentence tasks).")
    # On by default: on a CoNLL-2003 subset (4,000 sentences, gold tags only, 128 wide, two
    # seeds) it raised dev entity F1 from 0.697/0.674 to 0.743/0.748; not measured at scale.
    shape_dim: int = option(
        16,
        "token tasks: width of the word-shape embedding (capitals, digits, punctuation of each "
        "word as written, which an uncased teacher cannot see) joined to each token's; 0: "
        "none, and the model needs no word_shape_ids input. Sentence tasks ignore it.",
    )


def collect_vocab(tokenizer: Any, texts: Iterable[tuple[str, ...]], max_length: int) -> list[int]:
    """Sorted teacher token ids that occur in `texts`, tokenized exactly as the training data
    is (pairs as pairs, truncated to `max_length`), plus every special token id.

    Tokens cut off by truncation never reach the model, so they are not kept. `texts` are
    read once, chunk by chunk (a transfer set of millions is never copied).
    """
    ids: set[int] = set(tokenizer.all_special_ids)
    chunks: dict[int, list[tuple[str, ...]]] = {1: [], 2: []}  # single texts, pairs

    def flush(chunk: list[tuple[str, ...]]) -> None:
        firsts = [t[0] for t in chunk]
        seconds = [t[1] for t in chunk] if len(chunk[0]) == 2 else None
        encoded = tokenizer(firsts, seconds, truncation=True, max_length=max_length)
        for row in encoded["input_ids"]:
            ids.update(row)
        chunk.clear()

    for i, text in enumerate(texts):
        if len(text) not in chunks:
            raise ValueError(f"text {i} has {len(text)} fields; a text has 1 or 2 fields.")
        chunk = chunks[len(text)]
        chunk.append(text)
        if len(chunk) == TOKENIZE_CHUNK:
            flush(chunk)
    for chunk in chunks.values():
        if chunk:
            flush(chunk)
    return sorted(ids)


def collect_word_vocab(
    tokenizer: Any, sentences: Sequence[Sequence[str]], max_length: int
) -> list[int]:
    """Sorted teacher token ids of `sentences` (each a list or tuple of words; a packed
    transfer set is read chunk by chunk, never copied whole), tokenized as a token task's
    data is (`is_split_into_words`, truncated to `max_length`), plus every special token
    id."""
    ids: set[int] = set(tokenizer.all_special_ids)
    for i, words in enumerate(sentences):
        if isinstance(words, str) or not all(isinstance(w, str) for w in words):
            raise ValueError(f"sentence {i} is not a list of words: {words!r}.")
    for start in range(0, len(sentences), TOKENIZE_CHUNK):
        chunk = [list(words) for words in sentences[start : start + TOKENIZE_CHUNK]]
        encoded = tokenizer(chunk, is_split_into_words=True, truncation=True, max_length=max_length)
        for row in encoded["input_ids"]:
            ids.update(row)
    return sorted(ids)


def reduce_embeddings(weight: torch.Tensor, dim: int) -> torch.Tensor:
    """PCA of the rows of `weight [V, H]` to `[V, dim]`, rescaled to the rows' std.

    Rows are centred, then projected onto the `dim` directions of largest variance (exact:
    eigenvectors of the H x H covariance, in float64). The common mean is dropped: it is the
    same for every token, so it carries nothing a token could be told apart by. If `dim`
    exceeds the number of components (H, or V - 1 for few rows), the extra columns are small
    seeded random noise (1% of the kept columns' std): the student is wider than the
    teacher's information, and the LSTM can learn to use those inputs.

    Finally, the result is scaled so that its overall std equals that of `weight`. Keeping
    only the top components concentrates variance in fewer coordinates (each is larger than
    an average teacher coordinate), and padding adds near-zero ones; rescaling keeps the
    LSTM's inputs at the teacher's scale, so its gates start neither saturated nor starved.
    Returns float32 on the CPU; deterministic for a given input.
    """
    import torch

    if weight.dim() != 2:
        raise ValueError(f"weight must be [V, H], got shape {tuple(weight.shape)}.")
    if dim < 1:
        raise ValueError(f"dim must be at least 1, got {dim}.")
    w = weight.detach().to("cpu", torch.float64)  # [V, H]
    V, H = w.shape
    centred = w - w.mean(dim=0, keepdim=True)  # [V, H]
    covariance = centred.T @ centred  # [H, H]
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
    order = torch.argsort(eigenvalues, descending=True)
    k = min(dim, H, max(V - 1, 1))  # components that can carry variance
    components = eigenvectors[:, order[:k]]  # [H, k]
    # An eigenvector's sign is arbitrary; fix it (largest entry positive) for reproducibility.
    signs = torch.sign(components.gather(0, components.abs().argmax(0, keepdim=True)))
    components = components * torch.where(signs == 0, 1.0, signs)
    reduced = centred @ components  # [V, k]
    if dim > k:
        generator = torch.Generator().manual_seed(0)
        noise_std = 0.01 * float(reduced.std()) if V > 1 else 0.01
        noise = torch.randn(V, dim - k, generator=generator, dtype=torch.float64) * noise_std
        reduced = torch.cat([reduced, noise], dim=1)  # [V, dim]
    target_std = float(w.std()) if w.numel() > 1 else 1.0
    current_std = float(reduced.std()) if reduced.numel() > 1 else 0.0
    if current_std > 0:
        reduced = reduced * (target_std / current_std)
    return reduced.to(torch.float32)


@dataclasses.dataclass
class KeptVocabulary:
    """The teacher ids a student keeps a row for, and where every teacher id goes."""

    size: int  # rows of the student's table (kept ids, in id order)
    teacher_vocab_size: int  # the id space the tokenizer can emit
    pad_row: int
    unk_row: int
    token_map: Any  # int64 [teacher_vocab_size]: teacher id -> row (unknown ids: unk_row)

    def config_entries(self, tokenizer: Any) -> dict[str, int]:
        """The entries every teacher-id student config (BiLSTM, static) takes."""
        return {
            "vocab_size": self.size,
            "teacher_vocab_size": self.teacher_vocab_size,
            "pad_token_id": tokenizer.pad_token_id,
            "pad_row": self.pad_row,
            "unk_row": self.unk_row,
        }


def kept_vocabulary(tokenizer: Any, kept: list[int], embedding_rows: int) -> KeptVocabulary:
    """Rows for the sorted teacher ids `kept` (specials included); every other id maps to
    the unknown token's row (the pad token's if the tokenizer has no unknown token). A
    tokenizer that emits ids past the teacher's `embedding_rows`, or has no pad token, raises
    ModelError naming the fix."""
    import torch

    if kept and kept[-1] >= embedding_rows:
        raise ModelError(
            f"the tokenizer produces id {kept[-1]} but the teacher has only {embedding_rows} "
            "embedding rows; the tokenizer does not belong to this teacher (use the tokenizer "
            "saved with the teacher)."
        )
    row_of = {token_id: row for row, token_id in enumerate(kept)}
    pad_id = tokenizer.pad_token_id
    unk_id = tokenizer.unk_token_id
    if pad_id is None:
        raise ModelError(
            "the teacher's tokenizer has no pad token, so batches cannot be padded; set "
            "tokenizer.pad_token (e.g. to its eos token) and save it with the teacher."
        )
    pad_row = row_of[pad_id]  # specials are always kept
    unk_row = row_of[unk_id] if unk_id is not None else pad_row

    # The id space is what the tokenizer can emit; extra (padding) embedding rows map to unk.
    teacher_vocab_size = max(len(tokenizer), embedding_rows)
    token_map = torch.full((teacher_vocab_size,), unk_row, dtype=torch.long)  # [V_teacher]
    kept_ids = torch.tensor(kept, dtype=torch.long)  # [V]
    token_map[kept_ids] = torch.arange(len(kept), dtype=torch.long)
    return KeptVocabulary(len(kept), teacher_vocab_size, pad_row, unk_row, token_map)


@register_student("bilstm", BiLSTMSettings, "XtremeDistil")
def build_bilstm(
    teacher: Any,
    tokenizer: Any,
    texts: list[tuple[str, ...]],
    task_head: dict[str, Any],
    max_length: int,
    settings: BiLSTMSettings,
) -> Student:
    """A BiLSTM student for `teacher`, reading the teacher tokenizer's ids: a token tagger
    for a token-classification teacher (`is_token_classifier`), else a sentence classifier.

    `texts` are the training inputs: sentence tasks' texts (tuples of 1 or 2 fields), or for
    a token teacher the sentences' words (sequences of words, as `TokenSplit.words`). Its
    embedding table holds one row per teacher token seen in `texts` (see `collect_vocab`,
    `collect_word_vocab`), in id order, initialised with the PCA-reduced teacher vectors
    (`reduce_embeddings`); every other teacher id maps to the unknown token's row (the pad
    token's row if the tokenizer has no unknown token). `task_head` holds the head's config
    entries (`lmshrink.models.loading.task_head_settings(task)`); `settings` sets the shape.
    LSTM and classifier weights are random: seed torch beforehand for a reproducible student.
    It has no per-token states to compare with the teacher's in layer-wise losses; what
    representation losses match is its own `pooled` sentence vector (sentence model), or
    each token's final state `hidden_states[-1] [B, T, 2H]` (token model).

    The token model's word-shape table (`settings.shape_dim` wide, none when 0) starts
    random at the scale of the reduced word vectors, so neither input dominates the LSTM.
    """
    import torch

    from lmshrink.models.bilstm import (
        BiLSTMConfig,
        BiLSTMForSequenceClassification,
        BiLSTMForTokenClassification,
    )

    token_level = is_token_classifier(teacher)
    teacher_weight = teacher.get_input_embeddings().weight  # [V_teacher, H_teacher]
    embedding_rows = teacher_weight.shape[0]
    if token_level:
        kept = collect_word_vocab(tokenizer, texts, max_length)
    else:
        kept = collect_vocab(tokenizer, texts, max_length)
    vocab = kept_vocabulary(tokenizer, kept, embedding_rows)
    kept_ids = torch.tensor(kept, dtype=torch.long)  # [V]

    shape = dataclasses.asdict(settings)
    if not token_level:
        shape["shape_dim"] = 0  # a sentence has no words to shape
    elif shape["shape_dim"] < 0:
        raise ConfigError(f"shape_dim must be 0 (off) or a width, got {shape['shape_dim']}.")
    config = BiLSTMConfig(**vocab.config_entries(tokenizer), **task_head, **shape)
    model_class = BiLSTMForTokenClassification if token_level else BiLSTMForSequenceClassification
    model = model_class(config)
    reduced = reduce_embeddings(teacher_weight[kept_ids], config.embedding_dim)  # [V, E]
    with torch.no_grad():
        model.embeddings.weight.copy_(reduced)
        model.token_map.copy_(vocab.token_map)
        if model.shape_embeddings is not None:
            model.shape_embeddings.weight.mul_(reduced.std())
    return Student(
        model=model,
        tokenizer=tokenizer,
        layer_groups=model.layer_groups(),
        token_states=False,
        teacher_tokenizer=True,
    )
