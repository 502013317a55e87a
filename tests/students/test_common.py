"""What student families share: the registry entries, the `student:` config block made from
their settings, the `Student` record, and layer groups."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import tiny_bert_config

from lmshrink.config import from_dict, option
from lmshrink.errors import ConfigError
from lmshrink.registry import Registry
from lmshrink.students import (
    STUDENTS,
    Student,
    StudentConfig,
    layer_groups_of,
    register_student,
    student_settings,
)
from lmshrink.students.common import StudentFamily, student_config_class


def test_every_family_setting_is_one_config_field_with_its_flag():
    fields = {f.name: f for f in dataclasses.fields(StudentConfig)}
    names = []
    for _, family in STUDENTS.items():
        names += [f.name for f in dataclasses.fields(family.settings) if f.name not in names]
    assert list(fields) == ["kind", *names]
    assert StudentConfig().kind == "bilstm"
    flags = {name: f.metadata.get("flag") for name, f in fields.items()}
    assert flags["kind"] == "student"
    assert flags["layers"] == "student_layers" and flags["model"] == "student_model"
    assert flags["hidden_size"] is None
    # Empty means "the family's default"; each family's default is in the help.
    assert StudentConfig().hidden_size is None and StudentConfig().layer_ids == []
    help_text = fields["hidden_size"].metadata["help"]
    assert "bilstm: LSTM units per direction (default 256)" in help_text
    assert "narrow: hidden width (at most the teacher's) (default 256)" in help_text


def test_the_cli_flags_set_the_chosen_familys_settings():
    from lmshrink.cli import _build_config, build_parser
    from lmshrink.distill import DistillConfig
    from lmshrink.students.narrow import NarrowSettings

    parser, dests = build_parser()
    argv = ["distill", "--student", "narrow", "--student-layers", "3", "--hidden-size", "64"]
    cfg = _build_config(DistillConfig, parser.parse_args(argv), dests["distill"])
    assert student_settings(cfg.student) == NarrowSettings(layers=3, hidden_size=64)


def test_a_recipes_student_block_gives_the_familys_settings():
    from lmshrink.distill import DistillConfig
    from lmshrink.students.bilstm import BiLSTMSettings

    raw = {"kind": "bilstm", "embedding_dim": 64, "hidden_size": 256, "pooling": "max"}
    cfg = from_dict(DistillConfig, {"student": raw})
    expected = BiLSTMSettings(embedding_dim=64, hidden_size=256, num_layers=1, dropout=0.2)
    assert student_settings(cfg.student) == expected


def test_a_setting_of_another_family_names_what_the_chosen_one_takes():
    with pytest.raises(
        ConfigError,
        match=r"setting\(s\) pooling do not apply to the layers student; it takes layers, "
        r"layer_ids\.",
    ):
        student_settings(StudentConfig(kind="layers", pooling="max"))
    with pytest.raises(ConfigError, match="unknown student 'gru'.*bilstm"):
        student_settings(StudentConfig(kind="gru"))


@dataclasses.dataclass
class ToySettings:
    units: int = option(8, "toy units.")
    layers: int = option(1, "toy layers.", flag="student_layers")


def test_a_new_family_is_one_registration():
    """A family registered anywhere shows up in the registry and in the `student:` block,
    and builds through its entry with settings checked like the built-in ones."""

    @register_student("toy_family", ToySettings, "a toy family")
    def build_toy(teacher, tokenizer, texts, task_head, max_length, settings):
        model = torch.nn.Linear(settings.units, 2)
        return Student(model, tokenizer, [("all", [model])], False, True)

    try:
        assert STUDENTS.get("toy_family").make is build_toy
        config_class = student_config_class(STUDENTS)
        fields = {f.name: f for f in dataclasses.fields(config_class)}
        assert "toy_family (a toy family)" in fields["kind"].metadata["help"]
        assert fields["units"].metadata["help"] == "toy_family: toy units (default 8)."
        assert "toy_family: toy layers (default 1)" in fields["layers"].metadata["help"]
        chosen = student_settings(config_class(kind="toy_family", units=3))
        assert chosen == ToySettings(units=3, layers=1)
        built = STUDENTS.get("toy_family").build(None, "tok", [], {}, 8, units=5)
        assert built.model.in_features == 5 and built.final_model is built.model
        with pytest.raises(ConfigError, match="it takes units, layers"):
            STUDENTS.get("toy_family").build(None, "tok", [], {}, 8, hidden_size=5)
    finally:
        STUDENTS.remove("toy_family")
    assert "toy_family" not in STUDENTS


def test_family_declarations_are_checked():
    with pytest.raises(ValueError, match="settings must be a dataclass"):
        register_student("not_a_dataclass", dict, "x")(lambda *args: None)
    assert "not_a_dataclass" not in STUDENTS

    @dataclasses.dataclass
    class OtherFlag:
        layers: int = option(1, "layers.", flag="other_layers")

    families: Registry[StudentFamily] = Registry("student")
    families.register("one")(StudentFamily("one", ToySettings, "", lambda *a: None))
    families.register("two")(StudentFamily("two", OtherFlag, "", lambda *a: None))
    with pytest.raises(ValueError, match="'layers' has two flags"):
        student_config_class(families)


def test_layer_groups_of_a_model_ask_it_first():
    from transformers import BertForSequenceClassification

    from lmshrink.models.bilstm import BiLSTMConfig, BiLSTMForSequenceClassification

    bilstm = BiLSTMForSequenceClassification(BiLSTMConfig(vocab_size=10, hidden_size=4))
    assert [name for name, _ in layer_groups_of(bilstm)] == [
        "embeddings",
        "lstm.0",
        "classifier",
    ]
    bert = BertForSequenceClassification(tiny_bert_config())
    assert [name for name, _ in layer_groups_of(bert)] == [
        "embeddings",
        "layer.0",
        "layer.1",
        "classifier",
    ]


def test_the_record_says_what_a_student_can_be_compared_on():
    layers = Student(None, "tok", [], token_states=True, teacher_tokenizer=True)
    assert layers.compares_tokens and layers.final_model is None
    assert not Student(None, "tok", [], token_states=False, teacher_tokenizer=True).compares_tokens
    assert not Student(None, "own", [], token_states=True, teacher_tokenizer=False).compares_tokens
    wrapped = Student("wrapper", "tok", [], True, True, final="successor")
    assert wrapped.final_model == "successor"


def test_importing_the_students_imports_no_torch():
    import subprocess
    import sys

    code = (
        "import sys, lmshrink.students, lmshrink.distill; "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_token_classifiers_and_word_shape_readers_are_told_apart():
    from transformers import BertForSequenceClassification, BertForTokenClassification, BertModel

    from lmshrink.errors import ModelError
    from lmshrink.students.common import check_teacher, is_token_classifier, reads_word_shapes

    config = tiny_bert_config(num_labels=3)
    tagger, classifier = BertForTokenClassification(config), BertForSequenceClassification(config)
    assert is_token_classifier(tagger) and not is_token_classifier(classifier)
    head = {"num_labels": 3}
    check_teacher(tagger, head)  # a token teacher is a teacher
    check_teacher(classifier, head)
    with pytest.raises(ModelError, match="not a sequence or token classifier"):
        check_teacher(BertModel(config), head)
    with pytest.raises(ModelError, match="has 3 output"):
        check_teacher(tagger, {"num_labels": 9})

    class ShapeReader(torch.nn.Module):
        reads_word_shapes = True

    assert reads_word_shapes(ShapeReader()) and not reads_word_shapes(tagger)
