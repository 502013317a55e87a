"""Layer maps: each strategy pinned for several depths, and every refusal explained."""

import subprocess
import sys

import pytest

from lmshrink.config import from_dict
from lmshrink.distillation.layer_map import (
    LayerMapConfig,
    LayerShape,
    attention_compatible,
    check_attention_heads,
    check_layer_losses,
    check_relation_heads,
    map_layers,
    relation_compatible,
    validate_layer_map,
)
from lmshrink.errors import ConfigError

TEACHER = LayerShape(num_layers=6, hidden_size=384, num_heads=12)
BOTH_3_6 = (
    "the student has 3 layers (hidden 256, 4 heads), the teacher 6 layers (hidden 384, 12 heads)"
)


def student(layers: int, hidden: int = 256, heads: int = 4) -> LayerShape:
    return LayerShape(num_layers=layers, hidden_size=hidden, num_heads=heads)


# --- the strategies ---------------------------------------------------------------------

UNIFORM = {
    (3, 6): [(1, 2), (2, 4), (3, 6)],
    (2, 6): [(1, 3), (2, 6)],
    (6, 6): [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6)],
    (4, 6): [(1, 1), (2, 3), (3, 4), (4, 6)],
}
LAST_K = {
    (3, 6): [(1, 4), (2, 5), (3, 6)],
    (2, 6): [(1, 5), (2, 6)],
    (6, 6): [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6)],
    (4, 6): [(1, 3), (2, 4), (3, 5), (4, 6)],
}
# Explicit pairs, given out of order: returned sorted by student layer, otherwise unchanged.
EXPLICIT = {
    (3, 6): ([[3, 6], [1, 1]], [(1, 1), (3, 6)]),
    (2, 6): ([[2, 6], [1, 4]], [(1, 4), (2, 6)]),
    (6, 6): ([[6, 6], [5, 1]], [(5, 1), (6, 6)]),
    (4, 6): ([[4, 6], [2, 2], [1, 2]], [(1, 2), (2, 2), (4, 6)]),
}
DEPTHS = [(3, 6), (2, 6), (6, 6), (4, 6)]


@pytest.mark.parametrize("depths", DEPTHS)
def test_uniform_maps_student_layer_i_to_teacher_layer_i_t_over_s(depths):
    s, t = depths
    pairs = map_layers(LayerMapConfig(strategy="uniform"), student(s), student(t))
    assert pairs == UNIFORM[depths]
    assert pairs[-1] == (s, t)  # the last layers always meet


@pytest.mark.parametrize("depths", DEPTHS)
def test_last_k_maps_the_student_onto_the_teachers_last_layers(depths):
    s, t = depths
    assert map_layers(LayerMapConfig(strategy="last_k"), student(s), student(t)) == LAST_K[depths]


@pytest.mark.parametrize("depths", DEPTHS)
def test_explicit_returns_the_given_pairs_in_student_order(depths):
    s, t = depths
    given, expected = EXPLICIT[depths]
    cfg = LayerMapConfig(strategy="explicit", pairs=given)
    assert map_layers(cfg, student(s), student(t)) == expected


@pytest.mark.parametrize("strategy", ["uniform", "last_k"])
def test_include_embeddings_adds_pair_zero_zero_first(strategy):
    cfg = LayerMapConfig(strategy=strategy, include_embeddings=True)
    expected = [(0, 0)] + (UNIFORM if strategy == "uniform" else LAST_K)[(3, 6)]
    assert map_layers(cfg, student(3), TEACHER) == expected


def test_include_embeddings_with_an_explicit_zero_pair_adds_it_once():
    cfg = LayerMapConfig(strategy="explicit", pairs=[[0, 0], [3, 6]], include_embeddings=True)
    assert map_layers(cfg, student(3), TEACHER) == [(0, 0), (3, 6)]


def test_a_layer_map_config_loads_from_yaml_data():
    cfg = from_dict(LayerMapConfig, {"strategy": "explicit", "pairs": [[1, 2], [3, 6]]})
    assert cfg.pairs == [[1, 2], [3, 6]] and cfg.include_embeddings is False
    assert map_layers(cfg, student(3), TEACHER) == [(1, 2), (3, 6)]
    assert LayerMapConfig().strategy == "uniform" and LayerMapConfig().pairs == []


# --- refusals: one sentence with both models' layer counts and sizes ---------------------


def test_out_of_range_pair_message_is_pinned():
    cfg = LayerMapConfig(strategy="explicit", pairs=[[1, 2], [4, 6]])
    with pytest.raises(ConfigError) as info:
        map_layers(cfg, student(3), TEACHER)
    assert str(info.value) == (
        "layer pair (4, 6) is out of range: the student has 3 layers (hidden 256, 4 heads), "
        "the teacher 6 layers (hidden 384, 12 heads); use student layers 0-3 and teacher "
        "layers 0-6."
    )


BAD_MAPS = {
    "student index past its depth": (LayerMapConfig("explicit", [[4, 6]]), "out of range"),
    "teacher index past its depth": (LayerMapConfig("explicit", [[1, 7]]), "out of range"),
    "negative index": (LayerMapConfig("explicit", [[-1, 2]]), "out of range"),
    "student layer twice": (
        LayerMapConfig("explicit", [[2, 4], [2, 5]]),
        r"student layer 2 is mapped twice, in pairs \(2, 4\) and \(2, 5\)",
    ),
    "same pair twice": (LayerMapConfig("explicit", [[1, 2], [1, 2]]), "mapped twice"),
    "explicit without pairs": (LayerMapConfig("explicit", []), "needs pairs and got none"),
    "malformed pair": (LayerMapConfig("explicit", [[1, 2, 3]]), r"\[1, 2, 3\] is malformed"),
}


@pytest.mark.parametrize("case", BAD_MAPS)
def test_a_map_that_cannot_work_is_refused_with_both_models_shapes(case):
    cfg, what = BAD_MAPS[case]
    with pytest.raises(ConfigError, match=what) as info:
        map_layers(cfg, student(3), TEACHER)
    assert BOTH_3_6 in str(info.value)
    assert str(info.value).count(". ") == 0 and str(info.value).endswith(".")  # one sentence


@pytest.mark.parametrize("strategy", ["uniform", "last_k"])
def test_a_student_deeper_than_its_teacher_is_refused_for_automatic_strategies(strategy):
    with pytest.raises(ConfigError) as info:
        map_layers(LayerMapConfig(strategy=strategy), student(8, 384, 12), TEACHER)
    message = str(info.value)
    assert "deeper student" in message and "strategy 'explicit'" in message
    assert (
        "the student has 8 layers (hidden 384, 12 heads), "
        "the teacher 6 layers (hidden 384, 12 heads)" in message
    )
    # An explicit map can still pair a deeper student's layers, one teacher layer each.
    cfg = LayerMapConfig(strategy="explicit", pairs=[[4, 3], [8, 6]])
    assert map_layers(cfg, student(8, 384, 12), TEACHER) == [(4, 3), (8, 6)]


def test_a_model_without_layers_is_refused():
    with pytest.raises(ConfigError, match="at least one layer") as info:
        map_layers(LayerMapConfig(), student(0), TEACHER)
    assert "the student has 0 layers (hidden 256, 4 heads)" in str(info.value)


def test_an_unknown_strategy_lists_the_known_ones():
    with pytest.raises(ConfigError) as info:
        map_layers(LayerMapConfig(strategy="unifrom"), student(3), TEACHER)
    assert str(info.value) == (
        "layer map strategy 'unifrom' is unknown; use one of: uniform, last_k, explicit."
    )


def test_validate_layer_map_accepts_the_boundaries_and_refuses_an_empty_map():
    validate_layer_map([(0, 0), (3, 6)], student(3), TEACHER)  # both ends are valid indices
    with pytest.raises(ConfigError, match="empty") as info:
        validate_layer_map([], student(3), TEACHER)
    assert BOTH_3_6 in str(info.value)


# --- head compatibility -----------------------------------------------------------------


def test_attention_losses_need_equal_head_counts():
    assert attention_compatible(student(3, 192, 12), TEACHER)
    assert not attention_compatible(student(3), TEACHER)
    check_attention_heads(student(3, 192, 12), TEACHER)
    with pytest.raises(ConfigError, match="give the student 12 heads") as info:
        check_attention_heads(student(3), TEACHER)
    assert BOTH_3_6 in str(info.value)


def test_relation_heads_must_divide_both_widths():
    assert relation_compatible(student(3), TEACHER, 8)  # 256 / 8 and 384 / 8
    assert relation_compatible(student(3), TEACHER, 128)
    assert not relation_compatible(student(3), TEACHER, 12)  # 256 / 12 is not whole
    assert not relation_compatible(student(3), TEACHER, 0)
    check_relation_heads(student(3), TEACHER, 16)
    with pytest.raises(ConfigError, match="into 12 relation heads") as info:
        check_relation_heads(student(3), TEACHER, 12)
    assert BOTH_3_6 in str(info.value)


# --- shapes from model configs ----------------------------------------------------------


def test_layer_shape_reads_bert_and_distilbert_configs():
    from transformers import BertConfig, DistilBertConfig

    bert = BertConfig(num_hidden_layers=3, hidden_size=96, num_attention_heads=4)
    assert LayerShape.from_config(bert) == LayerShape(3, 96, 4)
    distil = DistilBertConfig(n_layers=2, dim=64, n_heads=8, hidden_dim=128)
    assert LayerShape.from_config(distil) == LayerShape(2, 64, 8)


def test_layer_shape_of_a_config_without_attention_names_the_missing_field():
    class LSTMConfig:
        num_hidden_layers = 1
        hidden_size = 300

    with pytest.raises(ConfigError, match="LSTMConfig has no 'num_attention_heads'"):
        LayerShape.from_config(LSTMConfig())


def test_layer_map_imports_no_torch():
    code = "import sys, lmshrink.distillation.layer_map; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- a run's layer-wise losses, checked before labelling ----------------------------------


def run_stages(*losses: dict) -> list:
    from lmshrink.distillation.stages import LossSpec, StageConfig

    specs = [LossSpec(name=loss["name"], params=loss.get("params", {})) for loss in losses]
    return [StageConfig(name="layers", data="transfer", losses=specs)]


def built(hidden: int, heads: int, token_states: bool = True, teacher_tokenizer: bool = True):
    from transformers import BertConfig

    from lmshrink.students import Student

    class Model:
        config = BertConfig(num_hidden_layers=3, hidden_size=hidden, num_attention_heads=heads)

    return Student(Model(), "tok", [], token_states, teacher_tokenizer)


def test_check_layer_losses_maps_layers_only_for_per_token_losses():
    from transformers import BertConfig

    teacher = BertConfig(num_hidden_layers=6, hidden_size=384, num_attention_heads=12)
    cfg = LayerMapConfig()
    assert check_layer_losses(cfg, run_stages({"name": "soft_kl"}), built(96, 4), teacher) == (
        None,
        False,
    )
    stages = run_stages({"name": "hidden_mse"}, {"name": "soft_kl"})
    assert check_layer_losses(cfg, stages, built(96, 4), teacher) == (
        [(1, 2), (2, 4), (3, 6)],
        False,
    )
    stages = run_stages({"name": "attention_kl"})
    assert check_layer_losses(cfg, stages, built(96, 12), teacher)[1] is True
    with pytest.raises(ConfigError, match="attention losses compare head by head"):
        check_layer_losses(cfg, stages, built(96, 4), teacher)
    stages = run_stages({"name": "value_relation", "params": {"relation_heads": 5}})
    with pytest.raises(ConfigError, match="into 5 relation heads"):
        check_layer_losses(cfg, stages, built(96, 4), teacher)
    for student in (built(96, 4, token_states=False), built(96, 4, teacher_tokenizer=False)):
        with pytest.raises(ConfigError, match="hidden_mse compare per-token states"):
            check_layer_losses(cfg, run_stages({"name": "hidden_mse"}), student, teacher)
