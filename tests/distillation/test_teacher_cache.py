import pytest
import torch
from conftest import make_sentences

from lmshrink.data.batching import collate, encode
from lmshrink.data.splits import Split
from lmshrink.data.tasks import get_task
from lmshrink.distillation.teacher_cache import TeacherCache, folder_fingerprint, label_transfer_set
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
    assert torch.allclose(out.representation, cls, atol=2e-3)  # stored in fp16


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
