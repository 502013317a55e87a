"""The loss registry: a loss declares on its entry what it reads and needs, and everything
else (stage checks, the layer map checks, the layer cache, the objective) asks the entry."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_bert_config
from torch import nn

from lmshrink.distillation.layer_cache import LayerNeeds, layer_needs, uncached_losses
from lmshrink.distillation.layer_map import LayerMapConfig, check_layer_losses
from lmshrink.distillation.loss_registry import LOSSES, make_entry, register_loss
from lmshrink.distillation.objective import Objective
from lmshrink.distillation.stages import LossSpec, StageConfig, validate_stages
from lmshrink.errors import ConfigError
from lmshrink.students import Student

NAME = "test_mean_hidden_mse"


class MeanHiddenMSE(nn.Module):
    """A loss defined outside lmshrink: the mean token state of the last mapped student
    layer, projected to the teacher's width, against the teacher's (MSE, times `scale`)."""

    def __init__(self, pairs, student_dim: int, teacher_dim: int, scale: float = 1.0) -> None:
        super().__init__()
        self.pairs, self.scale = pairs, scale
        self.projection = nn.Linear(student_dim, teacher_dim, bias=False)

    def forward(self, student_hidden_states, teacher_hidden_states, attention_mask):
        s, t = self.pairs[-1]
        mask = attention_mask[..., None].float()  # [B, T, 1]
        student = (student_hidden_states[s] * mask).sum(1) / mask.sum(1)  # [B, Ds]
        teacher = (teacher_hidden_states[t] * mask).sum(1) / mask.sum(1)  # [B, Dt]
        return self.scale * F.mse_loss(self.projection(student), teacher)


@pytest.fixture
def new_loss():
    """MeanHiddenMSE registered for one test: one decorator call, nothing else."""
    register_loss(NAME, needs_pairs=True, widths="hidden", teacher_layers="mapped")(MeanHiddenMSE)
    yield LOSSES.get(NAME)
    LOSSES.remove(NAME)


def stage(data: str, *names: str, **params) -> StageConfig:
    specs = [LossSpec(name, weight=0.5, params=params) for name in names]
    return StageConfig(name="s", data=data, losses=specs)


def test_a_new_loss_runs_through_stage_checks_the_layer_map_and_the_objective(new_loss):
    assert new_loss.inputs == ("student_hidden_states", "teacher_hidden_states", "attention_mask")
    stages = [stage("transfer", NAME, scale=2.0)]
    validate_stages(stages)
    with pytest.raises(ConfigError, match=f"loss '{NAME}' compares per-token states"):
        validate_stages([stage("labeled", NAME)])

    from transformers import BertForSequenceClassification as Bert

    torch.manual_seed(0)
    teacher = Bert(tiny_bert_config()).eval()
    student_model = Bert(
        tiny_bert_config(hidden_size=16, num_hidden_layers=1, intermediate_size=32)
    )
    student = Student(student_model, "tok", [], token_states=True, teacher_tokenizer=True)
    pairs, attention = check_layer_losses(LayerMapConfig(), stages, student, teacher.config)
    assert (pairs, attention) == ([(1, 2)], False)
    assert layer_needs([NAME], pairs) == LayerNeeds(hidden=(2,))  # cached, not online
    assert uncached_losses([NAME]) == []

    objective = Objective(student_model, stages[0].losses, teacher, pairs=pairs)
    (loss_fn,) = objective.losses
    assert loss_fn.pairs == [(1, 2)] and loss_fn.scale == 2.0
    assert (loss_fn.projection.in_features, loss_fn.projection.out_features) == (16, 32)
    batch = {
        "input_ids": torch.tensor([[2, 10, 11, 3], [2, 12, 3, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
    }
    objective.eval()
    total, parts = objective(batch, {})
    with torch.no_grad():
        s = student_model(**batch, output_hidden_states=True).hidden_states
        t = teacher(**batch, output_hidden_states=True).hidden_states
        expected = loss_fn(s, t, batch["attention_mask"])
    assert parts[NAME].item() == pytest.approx(expected.item(), rel=1e-6)
    assert total.item() == pytest.approx(0.5 * expected.item(), rel=1e-6)
    assert expected.item() > 0


def test_a_loss_reading_teacher_layers_it_does_not_declare_is_not_cached(new_loss):
    class FirstLayerMSE(nn.Module):
        def forward(self, student_hidden_states, teacher_hidden_states):
            return F.mse_loss(student_hidden_states[1], teacher_hidden_states[1])

    register_loss("test_first_layer_mse")(FirstLayerMSE)
    try:
        assert uncached_losses(["soft_kl", NAME, "test_first_layer_mse"]) == [
            "test_first_layer_mse"
        ]
        assert layer_needs(["test_first_layer_mse"], [(1, 2)]) == LayerNeeds()
    finally:
        LOSSES.remove("test_first_layer_mse")


class Pairs(nn.Module):
    def __init__(self, pairs) -> None:
        super().__init__()

    def forward(self, student_hidden_states, teacher_hidden_states):
        return student_hidden_states[0].sum()


class NoParams(nn.Module):
    def forward(self, student_logits, teacher_logits):
        return student_logits.sum()


class ReadsUnknown(nn.Module):
    def forward(self, student_logits, teacher_probabilities):
        return student_logits.sum()


@pytest.mark.parametrize(
    ("cls", "needs", "message"),
    [
        (ReadsUnknown, {}, "reads teacher_probabilities; a loss reads some of: student_logits"),
        (NoParams, {"widths": "hidden"}, "declares widths but does not take student_dim"),
        (NoParams, {"widths": "logits"}, "widths must be one of"),
        (NoParams, {"needs_pairs": True}, "declares needs_pairs but does not take pairs"),
        (NoParams, {"teacher_layers": "mapped"}, "declares teacher_layers but reads no per-token"),
        (Pairs, {"teacher_layers": "mapped"}, "reads the mapped teacher layers, so it needs_pairs"),
        (Pairs, {"needs_pairs": True, "teacher_layers": "last"}, "teacher_layers must be one"),
    ],
)
def test_an_entry_that_cannot_work_fails_when_it_is_registered(cls, needs, message):
    with pytest.raises(ValueError, match=message):
        register_loss("test_bad_loss", **needs)(cls)
    assert "test_bad_loss" not in LOSSES.names()
    with pytest.raises(ValueError, match=message):
        make_entry("test_bad_loss", cls, **needs)


def test_stage_checks_read_the_entries():
    validate_stages([stage("transfer", "soft_kl", "hidden_mse"), stage("labeled", "gold_ce")])
    with pytest.raises(ConfigError, match="needs teacher outputs"):
        validate_stages([stage("labeled", "representation")])
    with pytest.raises(ConfigError, match="needs gold labels"):
        validate_stages([stage("transfer", "gold_mse")])


def test_the_registry_loads_the_builtin_losses_on_first_lookup():
    code = (
        "import sys; from lmshrink.distillation.loss_registry import LOSSES; "
        "print('torch' in sys.modules, LOSSES.get('value_relation').cls.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["False", "ValueRelationLoss"], out.stderr
