"""The BiLSTM student family: vocabulary, PCA reduction of the teacher's embeddings, building."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lmshrink.errors import ConfigError
from lmshrink.models.bilstm import BiLSTMForSequenceClassification, register_auto
from lmshrink.students import STUDENTS
from lmshrink.students import bilstm as emb
from lmshrink.students.bilstm import BiLSTMSettings, build_bilstm, collect_vocab, reduce_embeddings

TEXTS = [
    ("the movie was good",),
    ("a dull plot!",),
    ("he sat on the mat", "she is charming"),
    ("it is very quite really weak and this story cat dog", "yes"),
]


@pytest.fixture(scope="module")
def teacher(tiny_encoder):
    from transformers import AutoModel, AutoTokenizer

    return AutoModel.from_pretrained(tiny_encoder), AutoTokenizer.from_pretrained(tiny_encoder)


def expected_ids(tokenizer, texts, max_length):
    ids = set(tokenizer.all_special_ids)
    for fields in texts:
        ids.update(tokenizer(*fields, truncation=True, max_length=max_length)["input_ids"])
    return sorted(ids)


# --- collect_vocab --------------------------------------------------------------------


def test_collect_vocab_is_the_tokenized_ids_plus_specials(teacher, monkeypatch):
    _, tokenizer = teacher
    monkeypatch.setattr(emb, "TOKENIZE_CHUNK", 1)  # several tokenizer calls per group
    got = collect_vocab(tokenizer, TEXTS, max_length=12)
    assert got == expected_ids(tokenizer, TEXTS, 12)
    ids = tokenizer.convert_tokens_to_ids
    assert ids("[MASK]") in got  # special, never in the texts
    assert ids("movie") in got and ids("charming") in got  # second field of a pair
    # The 4th example is cut to 12 tokens: words past the cut never reach the model.
    assert ids("dog") not in got
    assert ids("superb") not in got


def test_collect_vocab_keeps_more_with_longer_max_length(teacher):
    _, tokenizer = teacher
    got = collect_vocab(tokenizer, TEXTS, max_length=64)
    assert tokenizer.convert_tokens_to_ids("dog") in got
    assert got == expected_ids(tokenizer, TEXTS, 64)


def test_collect_vocab_rejects_three_fields(teacher):
    _, tokenizer = teacher
    with pytest.raises(ValueError, match="text 1 has 3 fields"):
        collect_vocab(tokenizer, [("a",), ("a", "b", "c")], max_length=8)


# --- reduce_embeddings ----------------------------------------------------------------


def random_rows(v: int, h: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scales = torch.linspace(0.2, 2.0, h)  # unequal variances, as in real embeddings
    return torch.randn(v, h, generator=g) * scales + torch.randn(h, generator=g)


def distances(rows: torch.Tensor) -> torch.Tensor:
    """Pairwise Euclidean distances [V, V], in float64 (cdist is loose near zero)."""
    rows = rows.double()
    return (rows[:, None, :] - rows[None, :, :]).norm(dim=-1)


def test_reduce_shapes_and_scale():
    weight = random_rows(50, 12)
    for dim in (4, 12, 20):
        reduced = reduce_embeddings(weight, dim)
        assert reduced.shape == (50, dim)
        assert reduced.dtype == torch.float32
        torch.testing.assert_close(reduced.std(), weight.std(), rtol=1e-4, atol=0)


def test_reduce_full_width_is_a_rotation_of_centred_rows():
    weight = random_rows(40, 10)
    centred = weight - weight.mean(0)
    reduced = reduce_embeddings(weight, 10)
    scale = weight.std() / centred.std()  # the std rescaling
    torch.testing.assert_close(distances(reduced), scale * distances(centred), rtol=1e-4, atol=1e-5)


def test_reduce_keeps_the_principal_subspace():
    # Rows in a 3-dimensional affine subspace of R^16: PCA to 3 loses nothing, so pairwise
    # distances survive (up to the rescaling); a wrong projection would distort them.
    g = torch.Generator().manual_seed(3)
    coords = torch.randn(60, 3, generator=g) * torch.tensor([3.0, 1.0, 0.3])
    basis = torch.linalg.qr(torch.randn(16, 3, generator=g)).Q.T  # [3, 16], orthonormal rows
    weight = coords @ basis + torch.randn(16, generator=g)
    reduced = reduce_embeddings(weight, 3)
    ratio = distances(reduced) / distances(coords).clamp(min=1e-9)
    off_diagonal = ~torch.eye(60, dtype=torch.bool)
    torch.testing.assert_close(
        ratio[off_diagonal],
        torch.full((60 * 59,), float(ratio[0, 1]), dtype=torch.float64),
        rtol=1e-4,
        atol=0,
    )
    # Components come out uncorrelated, largest variance first.
    cov = torch.cov(reduced.T)
    torch.testing.assert_close(
        cov - torch.diag(cov.diagonal()), torch.zeros(3, 3), atol=1e-4, rtol=0
    )
    assert cov[0, 0] > cov[1, 1] > cov[2, 2]


def test_reduce_pads_wider_than_teacher_with_small_columns():
    weight = random_rows(30, 6)
    reduced = reduce_embeddings(weight, 10)
    kept, extra = reduced[:, :6], reduced[:, 6:]
    assert extra.std() < 0.05 * kept.std()
    torch.testing.assert_close(reduce_embeddings(weight, 10), reduced, rtol=0, atol=0)


# --- build_bilstm ---------------------------------------------------------------------


def build(teacher, **config):
    """The BiLSTM student model of the registered family, its settings as keywords."""
    from lmshrink.data.tasks import get_task
    from lmshrink.models.loading import task_head_settings

    model, tokenizer = teacher
    settings = dict(embedding_dim=16, hidden_size=8, dropout=0.0)
    settings.update(config)
    torch.manual_seed(0)
    head = task_head_settings(get_task("sst2"))
    built = STUDENTS.get("bilstm").build(model, tokenizer, TEXTS, head, 12, **settings)
    assert built.tokenizer is tokenizer and built.teacher_tokenizer and not built.token_states
    return built.model


def test_build_maps_kept_ids_to_rows_and_others_to_unk(teacher):
    model, tokenizer = teacher
    student = build(teacher)
    kept = collect_vocab(tokenizer, TEXTS, 12)
    config = student.config
    assert config.vocab_size == len(kept)
    rows = model.get_input_embeddings().weight.shape[0]
    assert config.teacher_vocab_size == max(len(tokenizer), rows)
    assert config.unk_row == kept.index(tokenizer.unk_token_id)
    assert config.pad_row == kept.index(tokenizer.pad_token_id)
    assert config.pad_token_id == tokenizer.pad_token_id
    assert student.token_map[torch.tensor(kept)].tolist() == list(range(len(kept)))
    for word in ("dog", "superb", "##z"):  # not in the (truncated) texts
        assert student.token_map[tokenizer.convert_tokens_to_ids(word)] == config.unk_row
    assert config.num_labels == 2 and config.problem_type == "single_label_classification"
    assert config.id2label == {0: "0", 1: "1"} and config.label2id == {"0": 0, "1": 1}


def test_build_embeddings_are_the_reduced_teacher_rows(teacher):
    model, tokenizer = teacher
    student = build(teacher)
    kept = torch.tensor(collect_vocab(tokenizer, TEXTS, 12))
    teacher_rows = model.get_input_embeddings().weight[kept]  # [V, 32]
    expected = reduce_embeddings(teacher_rows, 16)
    assert torch.equal(student.embeddings.weight.detach(), expected)


def test_built_student_reads_teacher_tokenizer_and_trains_embeddings(teacher, tmp_path):
    from transformers import AutoModelForSequenceClassification

    _, tokenizer = teacher
    student = build(teacher, pooling="mean")
    batch = tokenizer(["the movie was good", "a dull plot!"], padding=True, return_tensors="pt")
    out = student(**batch, labels=torch.tensor([1, 0]))
    out.loss.backward()
    grad = student.embeddings.weight.grad  # [V, E]
    used = student.token_map[batch["input_ids"][batch["attention_mask"].bool()]].unique()
    assert grad[used].abs().sum(dim=1).gt(0).all()  # every token in the batch learns
    unused = torch.ones(len(grad), dtype=torch.bool)
    unused[used] = False
    assert torch.all(grad[unused] == 0)
    assert torch.all(grad[student.config.pad_row] == 0)

    student.eval()
    register_auto()
    student.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, BiLSTMForSequenceClassification)
    with torch.no_grad():
        assert torch.equal(student(**batch).logits, loaded(**batch).logits)


def test_build_refuses_fields_it_derives(teacher):
    with pytest.raises(ConfigError, match="vocab_size do not apply to the bilstm student"):
        build(teacher, vocab_size=10)


def test_registered_with_settings_whose_defaults_are_the_models():
    from lmshrink.models.bilstm import BiLSTMConfig

    family = STUDENTS.get("bilstm")
    assert (family.make, family.settings) == (build_bilstm, BiLSTMSettings)
    config = BiLSTMConfig()
    for name, value in dataclasses.asdict(BiLSTMSettings()).items():
        assert getattr(config, name) == value, name


# --- the token (NER) student ---------------------------------------------------------

TAGS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
SENTENCES = [
    ["he", "sat", "on", "the", "mat"],
    ["the", "cat", "and", "the", "dog"],
    ["she", "is", "charming", "yes"],
    ["xyzzy", "plot", "!"],
]


@pytest.fixture(scope="module")
def token_teacher(tiny_encoder):
    """The tiny encoder with a fresh 5-tag token head, and its (uncased) tokenizer."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(tiny_encoder, num_labels=5)
    return model, AutoTokenizer.from_pretrained(tiny_encoder)


def token_head() -> dict:
    from lmshrink.data.task_kinds import TOKEN_CLASSIFICATION

    return TOKEN_CLASSIFICATION.head_settings(TAGS)


def build_tagger(token_teacher, sentences=SENTENCES, **settings):
    model, tokenizer = token_teacher
    chosen = dict(embedding_dim=16, hidden_size=16, dropout=0.0)
    chosen.update(settings)
    torch.manual_seed(0)
    built = STUDENTS.get("bilstm").build(model, tokenizer, sentences, token_head(), 12, **chosen)
    assert built.tokenizer is tokenizer and built.teacher_tokenizer and not built.token_states
    return built.model


def test_a_token_teacher_gets_a_tagger_with_teacher_initialised_embeddings(token_teacher):
    from lmshrink.models.bilstm import BiLSTMForTokenClassification

    model, tokenizer = token_teacher
    assert emb.is_token_classifier(model)
    student = build_tagger(token_teacher, shape_dim=6)
    assert type(student) is BiLSTMForTokenClassification
    kept = emb.collect_word_vocab(tokenizer, SENTENCES, 12)
    expected = set(tokenizer.all_special_ids)
    for words in SENTENCES:
        expected.update(tokenizer(words, is_split_into_words=True)["input_ids"])
    assert kept == sorted(expected)
    config = student.config
    assert config.vocab_size == len(kept) and config.num_labels == 5
    assert config.id2label == dict(enumerate(TAGS))
    assert student.token_map[torch.tensor(kept)].tolist() == list(range(len(kept)))
    reduced = reduce_embeddings(model.get_input_embeddings().weight[torch.tensor(kept)], 16)
    assert torch.equal(student.embeddings.weight.detach(), reduced)
    # the shape table: 6 wide, padding row 0, at the scale of the word vectors
    shapes = student.shape_embeddings.weight.detach()
    assert config.shape_dim == 6 and shapes.shape == (10, 6)
    assert torch.all(shapes[0] == 0)
    assert 0.5 < float(shapes[1:].std() / reduced.std()) < 2.0


def test_word_vocab_refuses_texts_that_are_not_word_lists(token_teacher):
    _, tokenizer = token_teacher
    with pytest.raises(ValueError, match="sentence 1 is not a list of words"):
        emb.collect_word_vocab(tokenizer, [["a", "b"], "a text"], 12)


@pytest.mark.parametrize("given", [{}, {"shape_dim": 8}])
def test_a_sentence_teacher_ignores_shape_dim(teacher, given):
    student = build(teacher, **given)
    assert type(student) is BiLSTMForSequenceClassification
    assert student.config.shape_dim == 0 and student.shape_embeddings is None


def test_a_token_student_reads_word_shapes_by_default(token_teacher):
    student = build_tagger(token_teacher)
    assert student.reads_word_shapes and student.config.shape_dim == BiLSTMSettings().shape_dim
    assert BiLSTMSettings().shape_dim > 0


def capital_tagged(n: int, seed: int) -> tuple[list[list[str]], list[list[int]]]:
    """Sentences whose tags depend on capitals only: a Title word is B-PER (the word after
    it, also Title, I-PER), an ALL-CAPS one B-LOC, lower words O. The same words appear in
    every form, so an uncased tokenizer's ids alone cannot tell the tags apart."""
    import random

    rng = random.Random(seed)
    pool = ["cat", "dog", "mat", "he", "she", "plot", "good"]
    sentences, tags = [], []
    for _ in range(n):
        words, row = [], []
        while len(words) < 6:
            word, form = rng.choice(pool), rng.random()
            if form < 0.5:
                words.append(word), row.append(0)
            elif form < 0.75:
                words += [word.title(), rng.choice(pool).title()]
                row += [1, 2]
            else:
                words.append(word.upper()), row.append(3)
        sentences.append(words)
        tags.append(row)
    return sentences, tags


def train_tagger(student, enc, steps: int) -> list[float]:
    from lmshrink.data.batching import collate

    student.train()
    optimiser = torch.optim.Adam(student.parameters(), lr=0.02)
    losses = []
    for step in range(steps):
        batch = collate(enc, [(step * 8 + i) % len(enc) for i in range(8)])
        loss = student(**batch).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return losses


def test_tagger_trains_end_to_end_and_word_shapes_see_capitals(token_teacher, tmp_path):
    from transformers import AutoModelForTokenClassification

    from lmshrink.data.batching import encode_words
    from lmshrink.training.inference import predict_words

    _, tokenizer = token_teacher
    sentences, tags = capital_tagged(48, seed=3)
    shaped = build_tagger(token_teacher, sentences, shape_dim=4)
    plain = build_tagger(token_teacher, sentences, shape_dim=0)
    enc, _ = encode_words(tokenizer, sentences, tags, 32, word_shapes=True)
    without, _ = encode_words(tokenizer, sentences, tags, 32)
    shaped_losses = train_tagger(shaped, enc, 60)
    plain_losses = train_tagger(plain, without, 60)
    assert sum(shaped_losses[-10:]) < 0.2 * sum(shaped_losses[:10])  # it learns
    # without shapes, "Cat" and "cat" are the same input: capitals cannot be learnt
    assert sum(shaped_losses[-10:]) < 0.3 * sum(plain_losses[-10:])

    shaped.eval()
    register_auto()
    shaped.save_pretrained(tmp_path)
    loaded = AutoModelForTokenClassification.from_pretrained(tmp_path)
    got = predict_words(loaded, enc, batch_size=16)  # its batches carry word_shape_ids
    words_right = sum(int((g.argmax(-1) == t).sum()) for g, t in zip(got, tags, strict=True)) / sum(
        len(t) for t in tags
    )
    assert words_right > 0.9
    np_before = predict_words(shaped, enc, batch_size=16)
    assert all((a == b).all() for a, b in zip(got, np_before, strict=True))
