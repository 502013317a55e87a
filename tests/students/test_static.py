"""The static student family: the teacher's token states, the built student, its settings in
the `student:` block, ONNX export, and a short distill run."""

from __future__ import annotations

import json
import types

import pytest
import torch
from conftest import QUICK_STAGES

from lmshrink.config import from_dict
from lmshrink.errors import ConfigError
from lmshrink.models.static import StaticConfig, StaticForSequenceClassification
from lmshrink.students import STUDENTS, student_settings
from lmshrink.students.bilstm import BiLSTMSettings, collect_vocab, reduce_embeddings
from lmshrink.students.static import (
    StaticSettings,
    build_static,
    teacher_token_states,
    wrapping_ids,
)

TEXTS = [
    ("the movie was good",),
    ("a dull plot!",),
    ("he sat on the mat", "she is charming"),
]


@pytest.fixture(scope="module")
def teacher(tiny_teacher):
    """The session's fine-tuned tiny SST-2 BERT teacher and its tokenizer."""
    from lmshrink.data.tasks import get_task
    from lmshrink.models.loading import load_for_eval

    tokenizer, model = load_for_eval(str(tiny_teacher["teacher"]), get_task("sst2"))
    return model.eval(), tokenizer


def build(teacher, **settings):
    from lmshrink.data.tasks import get_task
    from lmshrink.models.loading import task_head_settings

    model, tokenizer = teacher
    chosen = dict(embedding_dim=8, dropout=0.0)
    chosen.update(settings)
    torch.manual_seed(0)
    head = task_head_settings(get_task("sst2"))
    return STUDENTS.get("static").build(model, tokenizer, TEXTS, head, 12, **chosen)


# --- the teacher's token states -------------------------------------------------------


def test_wrapping_ids_prefer_cls_sep_then_bos_eos(teacher):
    _, tokenizer = teacher
    assert wrapping_ids(tokenizer) == ([tokenizer.cls_token_id], [tokenizer.sep_token_id])
    specials = dict(cls_token_id=None, sep_token_id=None, bos_token_id=None, eos_token_id=None)
    gpt_like = types.SimpleNamespace(**{**specials, "bos_token_id": 7, "eos_token_id": 8})
    assert wrapping_ids(gpt_like) == ([7], [8])
    assert wrapping_ids(types.SimpleNamespace(**specials)) == ([], [])


def test_a_tokens_state_is_the_teachers_last_layer_at_its_position(teacher):
    """Against a direct computation through another path (the encoder's last_hidden_state),
    one token at a time; several small batches keep the order; the teacher is put in eval
    mode for it (dropout off) and left in the mode it was in."""
    model, tokenizer = teacher
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    ids = tokenizer.convert_tokens_to_ids(["[PAD]", "good", "movie", "[CLS]", "dull"])
    model.train()
    try:
        got = teacher_token_states(model, tokenizer, ids, batch_size=2)
        assert model.training
    finally:
        model.eval()
    assert got.shape == (5, model.config.hidden_size) and got.dtype == torch.float32
    with torch.no_grad():
        for row, token in enumerate(ids):
            states = model.base_model(input_ids=torch.tensor([[cls, token, sep]])).last_hidden_state
            torch.testing.assert_close(got[row], states[0, 1], rtol=0, atol=1e-5)
    # contextual states, not the input embeddings
    assert not torch.allclose(got, model.get_input_embeddings().weight[ids], atol=1e-2)


def test_without_wrapping_tokens_a_token_is_read_alone(teacher):
    model, tokenizer = teacher
    bare = types.SimpleNamespace(
        cls_token_id=None, sep_token_id=None, bos_token_id=None, eos_token_id=None
    )
    token = tokenizer.convert_tokens_to_ids("great")
    got = teacher_token_states(model, bare, [token])
    with torch.no_grad():
        want = model.base_model(input_ids=torch.tensor([[token]])).last_hidden_state[0, 0]
    torch.testing.assert_close(got[0], want, rtol=0, atol=1e-5)


# --- build_static ---------------------------------------------------------------------


def test_the_student_starts_from_the_pca_of_the_teachers_token_states(teacher):
    model, tokenizer = teacher
    built = build(teacher)
    student = built.model
    assert type(student) is StaticForSequenceClassification
    assert built.tokenizer is tokenizer and built.teacher_tokenizer and not built.token_states
    assert [name for name, _ in built.layer_groups] == ["embeddings", "classifier"]
    kept = collect_vocab(tokenizer, TEXTS, 12)
    states = teacher_token_states(model, tokenizer, kept)  # [V, 32]
    expected = reduce_embeddings(states, 8)
    assert torch.equal(student.embeddings.weight.detach(), expected)
    # special tokens keep the PCA of their own state too (not zero, not the unk row's)
    cls_row = kept.index(tokenizer.cls_token_id)
    pad_row = student.config.pad_row
    assert student.embeddings.weight[pad_row].abs().sum() > 0
    assert not torch.equal(student.embeddings.weight[cls_row], student.embeddings.weight[pad_row])


def test_kept_ids_map_to_rows_and_unseen_ids_to_unk(teacher):
    model, tokenizer = teacher
    student = build(teacher, hidden_size=4).model
    config = student.config
    kept = collect_vocab(tokenizer, TEXTS, 12)
    assert config.vocab_size == len(kept)
    assert config.teacher_vocab_size == max(len(tokenizer), model.config.vocab_size)
    assert config.unk_row == kept.index(tokenizer.unk_token_id)
    assert config.pad_row == kept.index(tokenizer.pad_token_id)
    assert config.pad_token_id == tokenizer.pad_token_id
    assert (config.embedding_dim, config.hidden_size, config.dropout) == (8, 4, 0.0)
    assert config.num_labels == 2 and config.problem_type == "single_label_classification"
    assert student.token_map[torch.tensor(kept)].tolist() == list(range(len(kept)))
    unseen = tokenizer.convert_tokens_to_ids("superb")  # not in TEXTS
    assert unseen not in kept and student.token_map[unseen] == config.unk_row
    with torch.no_grad():
        pooled = student(input_ids=torch.tensor([[unseen]])).pooled[0]
    torch.testing.assert_close(pooled, student.embeddings.weight[config.unk_row])


def test_a_token_teacher_is_refused(tiny_encoder):
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    model = AutoModelForTokenClassification.from_pretrained(tiny_encoder, num_labels=3)
    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder)
    with pytest.raises(ConfigError, match="labels whole sentences.*use the bilstm student"):
        build_static(model, tokenizer, [["a", "b"]], {"num_labels": 3}, 12, StaticSettings())


# --- settings -------------------------------------------------------------------------


def test_registered_with_settings_whose_defaults_are_the_models():
    family = STUDENTS.get("static")
    assert (family.make, family.settings) == (build_static, StaticSettings)
    defaults = StaticSettings()
    assert (defaults.embedding_dim, defaults.hidden_size, defaults.dropout) == (256, 0, 0.1)
    config = StaticConfig()
    for name in ("embedding_dim", "hidden_size", "dropout", "bigram_buckets"):
        assert getattr(config, name) == getattr(defaults, name), name


def test_shared_student_keys_keep_each_familys_defaults():
    """embedding_dim, hidden_size and dropout are one field each in the `student:` block,
    shared with the bilstm family; an unset one takes the chosen family's default."""
    from lmshrink.distill import DistillConfig

    def settings(block):
        return student_settings(from_dict(DistillConfig, {"student": block}).student)

    assert settings({"kind": "static"}) == StaticSettings(256, 0, 0.1)
    assert settings({"kind": "bilstm"}) == BiLSTMSettings()
    assert settings({"kind": "static", "embedding_dim": 16, "hidden_size": 0}) == StaticSettings(
        16, 0, 0.1
    )
    assert settings({"kind": "bilstm", "hidden_size": 8}).dropout == 0.2
    with pytest.raises(ConfigError, match="pooling do not apply to the static student"):
        settings({"kind": "static", "pooling": "max"})


# --- export and distill ---------------------------------------------------------------


@pytest.mark.parametrize("bigram_buckets", [0, 37])
def test_onnx_export_matches_pytorch(teacher, tiny_teacher, tmp_path, bigram_buckets):
    pytest.importorskip("onnxruntime")
    from lmshrink.compress.onnx import OnnxClassifier, OnnxSettings
    from lmshrink.config import DataConfig
    from lmshrink.export import ExportConfig, export

    _, tokenizer = teacher
    student = build(teacher, hidden_size=6, bigram_buckets=bigram_buckets).model
    with torch.no_grad():  # a large spread, so that logits are far from zero
        for name, param in student.named_parameters():
            if name != "embeddings.weight":
                param.normal_(0.0, 0.5)
    student.save_pretrained(tmp_path / "student")
    tokenizer.save_pretrained(tmp_path / "student")
    out = tmp_path / "onnx"
    result = export(
        ExportConfig(
            model=str(tmp_path / "student"),
            out=str(out),
            onnx=OnnxSettings(parity_batch_sizes=[1, 16]),
            data=DataConfig(task="sst2", data_dir=str(tiny_teacher["glue"]), max_length=32),
        )
    )
    parity = result["parity"]
    assert parity["passed"] and parity["max_abs_diff"] < 1e-4 and parity["agreement"] == 1.0
    assert result["inputs"] == ["input_ids", "attention_mask"]

    texts = ["a", "the film was great and the cast was lovely", "dull plot"]
    batch = dict(tokenizer(texts, padding=True, return_tensors="pt"))
    with torch.no_grad():
        want = student.eval()(**batch).logits
    assert want.abs().max() > 0.1
    got = OnnxClassifier(out / "model.onnx")(**batch).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


def test_a_short_distill_run_writes_a_loadable_static_model(tiny_teacher, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from lmshrink.distill import DistillConfig, distill

    raw = {
        "teacher": str(tiny_teacher["teacher"]),
        "out": str(tmp_path / "run"),
        "progress": False,
        "measure_speed": False,
        "data": {"task": "sst2", "data_dir": str(tiny_teacher["glue"]), "max_length": 32},
        "transfer": {"files": [str(tiny_teacher["transfer"])], "min_words": 1},
        "student": {"kind": "static", "embedding_dim": 16},
        "stages": QUICK_STAGES,
    }
    report = distill(from_dict(DistillConfig, raw))
    assert [h["stage"] for h in report["history"]][0] == "representation"
    assert report["dev"]["student"]["accuracy"] >= 0.8
    assert json.loads((tmp_path / "run" / "report.json").read_text())["dev"] == report["dev"]
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "model")
    assert type(model) is StaticForSequenceClassification
    assert model.config.embedding_dim == 16 and model.config.hidden_size == 0
