import os
import signal

import numpy as np
import pytest
import torch
from conftest import make_sentences

from lmshrink.data.batching import collate, encode
from lmshrink.data.splits import Split
from lmshrink.data.tasks import get_task
from lmshrink.distillation.teacher_cache import TeacherCache, folder_fingerprint, label_transfer_set
from lmshrink.errors import Interrupted
from lmshrink.models.loading import load_for_training

TEXTS = [(s,) for s, _ in make_sentences(50, seed=3)]


@pytest.fixture(scope="module")
def teacher(tiny_encoder):
    torch.manual_seed(0)
    tok, model = load_for_training(str(tiny_encoder), get_task("sst2"))
    return tok, model.eval()


def _label(teacher, cache, **kw):
    tok, model = teacher
    settings = dict(max_length=32, batch_size=8, repr_layer=-1, progress=False)
    settings.update(kw)
    return label_transfer_set(model, tok, TEXTS, cache, **settings)


def test_cached_outputs_equal_direct_inference(teacher, tmp_path):
    cache = TeacherCache(tmp_path, {"t": 1}, len(TEXTS), shard_size=16)
    stats = _label(teacher, cache)
    assert (stats.reused, stats.shards_done_before, stats.shards_total) == (False, 0, 4)
    out = cache.load()
    tok, model = teacher
    batch = collate(encode(tok, Split("x", "x", "", TEXTS, None), 32), list(range(len(TEXTS))))
    with torch.inference_mode():
        direct = model(**batch, output_hidden_states=True)
    assert torch.allclose(out.logits, direct.logits, atol=1e-5)
    cls = direct.hidden_states[-1][:, 0]  # [N, H]
    assert out.representation.shape == cls.shape
    assert torch.allclose(out.representation.load(), cls, atol=2e-3)  # stored in fp16


def test_second_run_reuses_and_killed_run_resumes(teacher, tmp_path):
    tok, model = teacher
    cache = TeacherCache(tmp_path, {"t": 1}, len(TEXTS), shard_size=16)
    _label(teacher, cache)
    first = cache.load().logits.clone()
    calls = []
    original = model.forward
    model.forward = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        again = _label(teacher, TeacherCache(tmp_path, {"t": 1}, len(TEXTS), shard_size=16))
        assert again.reused and calls == []
        cache.shard_path(2).unlink()  # as if the run had been killed before shard 2
        resumed = _label(teacher, cache)
        assert (resumed.reused, resumed.shards_done_before) == (False, 3)
        assert len(calls) == 2  # 16 examples of shard 2 in batches of 8
    finally:
        model.forward = original
    assert torch.equal(cache.load().logits, first)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_labelling_between_batches_and_resume_labels_the_rest(
    teacher, tmp_path, signum
):
    tok, model = teacher
    whole = TeacherCache(tmp_path / "whole", {"t": 1}, len(TEXTS), shard_size=16)
    _label(teacher, whole)
    cache = TeacherCache(tmp_path / "cut", {"t": 1}, len(TEXTS), shard_size=16)
    calls = []
    original = model.forward

    def forward(*args, **kwargs):  # the signal comes in the first batch of shard 1
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signum)
        return original(*args, **kwargs)

    model.forward = forward
    before = signal.getsignal(signum)
    try:
        with pytest.raises(Interrupted, match="1 of 4 shard") as stopped:
            _label(teacher, cache)
    finally:
        model.forward = original
    assert stopped.value.exit_code == 128 + signum and len(calls) == 3
    assert cache.done_shards() == [0]  # the interrupted shard was not written
    assert signal.getsignal(signum) is before  # the handlers are back
    resumed = _label(teacher, cache)
    assert resumed.shards_done_before == 1
    assert torch.equal(cache.load().logits, whole.load().logits)


def test_fingerprint_depends_on_every_input(tmp_path, tiny_encoder):
    base = {"teacher": folder_fingerprint(tiny_encoder), "texts": "abc", "max_length": 32}
    keys = [base, {**base, "texts": "abd"}, {**base, "max_length": 64}]
    prints = {TeacherCache(tmp_path, k, 10).fingerprint for k in keys}
    assert len(prints) == 3
    assert TeacherCache(tmp_path, dict(base), 10).fingerprint in prints


def test_processes_label_disjoint_shards(teacher, tmp_path):
    cache = TeacherCache(tmp_path, {"t": 2}, len(TEXTS), shard_size=16)
    _label(teacher, cache, rank=1, world_size=2, repr_layer=None)
    assert cache.done_shards() == [1, 3] and not cache.is_complete()
    _label(teacher, cache, rank=0, world_size=2, repr_layer=None)
    assert cache.is_complete() and cache.load().representation is None


# --- token tasks: per-word outputs, ragged ----------------------------------------------

WORDS = [
    ("the", "xyzzy", "good"),  # "xyzzy" is several sub-tokens
    ("dull",),
    ("a", "movie", "was", "quite", "great"),
    ("bob", "sat", "on", "the", "mat"),
    ("it", "is", "boring"),
]


@pytest.fixture(scope="module")
def token_teacher(tiny_encoder):
    torch.manual_seed(0)
    tok, model = load_for_training(str(tiny_encoder), get_task("conll2003"))
    return tok, model.eval()


def test_token_outputs_are_stored_per_word_without_padding(token_teacher, tmp_path):
    from safetensors.torch import load_file

    from lmshrink.data.batching import encode_words
    from lmshrink.training.inference import predict_words

    tok, model = token_teacher
    cache = TeacherCache(tmp_path, {"t": 3}, len(WORDS), shard_size=2)
    label_transfer_set(model, tok, WORDS, cache, 32, 2, repr_layer=-1, progress=False, words=True)
    shard = load_file(cache.shard_path(1))  # sentences 2 and 3: 5 + 5 words, nothing padded
    assert shard["word_counts"].tolist() == [5, 5]
    assert shard["logits"].shape == (10, 9) and shard["repr"].shape == (10, 32)
    out = cache.load()
    assert out.word_counts.tolist() == [3, 1, 5, 5, 3]
    enc, _ = encode_words(tok, [list(w) for w in WORDS], None, 32)
    direct = predict_words(model, enc, batch_size=8)
    assert torch.allclose(out.logits, torch.from_numpy(np.concatenate(direct)), atol=1e-5)
    # the representation is the last hidden state at each word's first sub-token (fp16)
    batch = collate(enc, [0])
    with torch.inference_mode():
        hidden = model(**batch, output_hidden_states=True).hidden_states[-1][0]  # [T, H]
    assert torch.allclose(out.representation[:3], hidden[enc.word_starts[0]], atol=2e-3)


def test_word_targets_hand_out_padded_batches_with_the_teachers_mask():
    from lmshrink.distillation.labelling import WordTargets

    counts = torch.tensor([2, 3, 1])
    logits = torch.arange(6 * 2, dtype=torch.float32).view(6, 2)  # rows: 0 1 | 2 3 4 | 5
    targets = WordTargets(logits, None, counts)
    got = targets.take([2, 1], width=2)
    assert set(got) == {"teacher_word_logits", "teacher_word_mask"}
    assert got["teacher_word_mask"].tolist() == [[True, False], [True, True]]
    assert got["teacher_word_logits"][0].tolist() == [[10.0, 11.0], [0.0, 0.0]]
    assert got["teacher_word_logits"][1].tolist() == [[4.0, 5.0], [6.0, 7.0]]  # cut to 2


def test_stage_targets_mark_words_both_models_kept():
    """The student's word positions come from its encoding; the mask is True only where the
    teacher labelled the word too (it may have kept fewer words under truncation)."""
    from lmshrink.data.batching import Encoded
    from lmshrink.distillation.labelling import WordTargets
    from lmshrink.distillation.trainer import StageData, _targets

    enc = Encoded(
        {"input_ids": [[2, 7, 8, 9, 3], [2, 7, 3], [2, 5, 6, 3]]},
        None,
        0,
        word_starts=[[1, 2, 3], [1], [1, 2]],
    )
    words = WordTargets(torch.ones(5, 2), torch.ones(5, 4), torch.tensor([2, 1, 2]))
    data = StageData(enc, {}, words=words)
    got = _targets(data, [0, 1], {"input_ids": torch.zeros(2, 5)}, "cpu")
    assert got["word_index"].tolist() == [[1, 2, 3], [1, 0, 0]]
    assert got["word_mask"].tolist() == [[True, True, False], [True, False, False]]
    assert got["teacher_word_logits"].shape == (2, 3, 2)
    assert got["teacher_word_repr"].shape == (2, 3, 4)


def test_sentence_cache_keys_are_unchanged_and_token_keys_differ(tiny_encoder, tmp_path):
    """A sentence task keys its cache as it always did (so runs reuse their caches); a token
    task's key says its outputs are per word, and that its representation is per word."""
    from lmshrink.data.task_kinds import SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION
    from lmshrink.distillation.labelling import Labeller, LabellingConfig
    from lmshrink.distillation.stages import default_stages

    def key(kind):
        labeller = Labeller(
            teacher=None,
            tokenizer=[0] * 7,  # len() is the vocabulary size
            teacher_dir=str(tiny_encoder),
            cache_root=tmp_path,
            max_length=32,
            settings=LabellingConfig(),
            stages=default_stages(kind),
            accelerator=None,
            progress=False,
            log=print,
            words=kind.token_level,
        )
        return labeller.key

    sentence = key(SEQUENCE_CLASSIFICATION)
    assert sentence == {
        "teacher": folder_fingerprint(tiny_encoder),
        "max_length": 32,
        "tokenizer": "list",
        "vocab": 7,
        "repr": [-1, "cls"],
    }
    token = key(TOKEN_CLASSIFICATION)
    assert token == {**sentence, "repr": [-1, "first_subtoken"], "level": "word"}
