"""BERT-of-Theseus student: schedule, mixed forward, frozen predecessor, state, stock folder."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import free_port, make_sentences, tiny_bert_config
from transformers import AutoTokenizer, BertForSequenceClassification

from lmshrink.data.tasks import get_task
from lmshrink.errors import ConfigError
from lmshrink.models.loading import task_head_settings
from lmshrink.models.theseus import TheseusModel
from lmshrink.students import STUDENTS, Student
from lmshrink.students.theseus import TheseusSettings, build_theseus

SST2 = task_head_settings(get_task("sst2"))


@pytest.fixture(scope="module")
def tokenizer(tiny_encoder):
    return AutoTokenizer.from_pretrained(tiny_encoder)


def bert_teacher(vocab_size: int, layers: int = 4, seed: int = 0) -> BertForSequenceClassification:
    """A random 4-layer BERT classifier (hidden 48, 4 heads), every tensor drawn afresh so a
    layer taken from the wrong place shows, and no dropout so train-mode outputs are exact."""
    torch.manual_seed(seed)
    config = tiny_bert_config(
        vocab_size=vocab_size,
        hidden_size=48,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=96,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        **SST2,
    )
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.2)
    return model.eval()


@pytest.fixture
def teacher(tokenizer):
    return bert_teacher(len(tokenizer))


@pytest.fixture(scope="module")
def batch(tokenizer):
    """Six toy sentences of different lengths, padded (so the attention mask matters)."""
    texts = [s for s, _ in make_sentences(5, seed=3)] + ["a film"]
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    assert (enc["attention_mask"] == 0).any()
    return dict(enc)


def build(teacher, tokenizer, seed=None, **settings) -> Student:
    """A Theseus student of `teacher`, its settings as keywords (checked as a config's are)."""
    chosen = STUDENTS.get("theseus").settings_from(settings)
    return build_theseus(teacher, tokenizer, [], SST2, 32, chosen, seed=seed)


def theseus(teacher, tokenizer, **settings) -> TheseusModel:
    settings = {"layers": 2, "seed": 0, **settings}
    return build(teacher, tokenizer, **settings).model


def test_registered_as_theseus():
    family = STUDENTS.get("theseus")
    assert (family.make, family.settings) == (build_theseus, TheseusSettings)


def test_the_record_trains_the_wrapper_and_saves_the_successor(teacher, tokenizer):
    built = build(teacher, tokenizer, layers=2, seed=0)
    assert isinstance(built.model, TheseusModel) and built.model.training
    assert built.final_model is built.model.successor
    assert built.tokenizer is tokenizer and built.compares_tokens
    assert built.layer_groups == built.model.layer_groups()


# --- the schedule -----------------------------------------------------------------------------


def test_replacement_probability_rises_linearly_then_stays_at_one(teacher, tokenizer):
    model = theseus(teacher, tokenizer, replace_start=0.3, replace_steps=100)
    assert model.replace_probability(0) == pytest.approx(0.3)
    assert model.replace_probability(50) == pytest.approx(0.65)
    assert model.replace_probability(99) == pytest.approx(0.993)
    assert model.replace_probability(100) == 1.0
    assert model.replace_probability(5000) == 1.0
    assert model.replaced_groups(100) == [True, True]


def test_each_training_forward_is_one_step_and_eval_forwards_are_not(teacher, tokenizer, batch):
    model = theseus(teacher, tokenizer, replace_steps=10)
    assert int(model.replace_step) == 0 and model.replace_probability() == pytest.approx(0.3)
    for _ in range(3):
        model(**batch)
    assert int(model.replace_step) == 3
    model.eval()
    with torch.no_grad():
        model(**batch)
    assert int(model.replace_step) == 3
    assert model.replace_probability() == pytest.approx(0.3 + 0.7 * 3 / 10)


def test_draws_depend_only_on_seed_and_step(teacher, tokenizer):
    a = theseus(teacher, tokenizer, layers=1, seed=7, replace_start=0.5, replace_steps=10**9)
    b = theseus(teacher, tokenizer, layers=1, seed=7, replace_start=0.5, replace_steps=10**9)
    other = theseus(teacher, tokenizer, layers=1, seed=8, replace_start=0.5, replace_steps=10**9)
    torch.manual_seed(1)
    draws = [a.replaced_groups(step) for step in range(400)]
    torch.manual_seed(2)  # the global RNG plays no part
    assert [b.replaced_groups(step) for step in range(400)] == draws
    assert [other.replaced_groups(step) for step in range(400)] != draws
    share = sum(d[0] for d in draws) / len(draws)
    assert 0.4 < share < 0.6  # p is 0.5 throughout


def test_default_seed_follows_the_runs_torch_seed(teacher, tokenizer):
    def seed_after(torch_seed: int) -> int:
        torch.manual_seed(torch_seed)
        return build(teacher, tokenizer, layers=2).model.seed

    assert seed_after(1) == seed_after(1) != seed_after(2)


# --- forward paths ----------------------------------------------------------------------------


def test_eval_mode_and_p_one_run_the_successor_alone(teacher, tokenizer, batch):
    model = theseus(teacher, tokenizer, replace_start=0.0, replace_steps=5)
    successor = model.final_model()
    assert successor is model.successor and successor.config.num_hidden_layers == 2
    model.replace_step.fill_(5)  # p = 1: the successor-alone phase
    want = successor(**batch, output_hidden_states=True)
    got = model(**batch, output_hidden_states=True)
    assert torch.equal(got.logits, want.logits)
    assert len(got.hidden_states) == 3
    assert all(
        torch.equal(g, w) for g, w in zip(got.hidden_states, want.hidden_states, strict=True)
    )
    model.replace_step.zero_()  # p = 0 in training, but eval mode ignores the schedule
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, successor(**batch).logits)


def test_p_zero_reproduces_the_teacher(teacher, tokenizer, batch):
    model = theseus(teacher, tokenizer, replace_start=0.0)
    assert model.training and model.replaced_groups(0) == [False, False]
    with torch.no_grad():
        want = teacher(**batch, output_hidden_states=True)
        got = model(**batch, output_hidden_states=True)
    torch.testing.assert_close(got.logits, want.logits, rtol=0, atol=1e-5)
    # Hidden states: the embeddings, then each group's output (teacher layers 2 and 4).
    assert len(got.hidden_states) == 3
    for g, w in zip(got.hidden_states, [want.hidden_states[i] for i in (0, 2, 4)], strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-5)
    # The successor alone (its layers are teacher layers 1 and 3) differs: the check can fail.
    assert not torch.allclose(model.successor(**batch).logits, want.logits, atol=1e-3)


def test_a_mixed_draw_chains_successor_and_predecessor_layers(teacher, tokenizer, batch):
    """Group 0 replaced, group 1 not: the stock forward of a BERT whose layer stack is
    [successor layer 0, teacher layer 2, teacher layer 3] under the successor's head."""
    model = theseus(teacher, tokenizer)
    hybrid = copy.deepcopy(model.successor)
    stack = [model.successor.bert.encoder.layer[0]] + list(teacher.bert.encoder.layer[2:])
    hybrid.bert.encoder.layer = torch.nn.ModuleList(copy.deepcopy(stack))
    hybrid.eval()
    model.eval()
    with torch.no_grad():
        want = hybrid(**batch).logits
        got = model.forward_groups([True, False], **batch).logits
        all_successor = model.forward_groups([True, True], **batch)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    torch.testing.assert_close(all_successor.logits, model.successor(**batch).logits)
    assert not torch.allclose(got, all_successor.logits, atol=1e-3)


def test_labels_give_the_successors_own_loss(teacher, tokenizer, batch):
    model = theseus(teacher, tokenizer).eval()
    labels = torch.tensor([0, 1, 1, 0, 1, 0])
    with torch.no_grad():
        want = model.successor(**batch, labels=labels).loss
        got = model.forward_groups([True, True], **batch, labels=labels).loss
    torch.testing.assert_close(got, want)


def test_attention_maps_are_refused_while_modules_are_replaced(teacher, tokenizer, batch):
    model = theseus(teacher, tokenizer, replace_start=0.0)
    with pytest.raises(ConfigError, match="attention maps exist only once every module"):
        model(**batch, output_attentions=True)


# --- training ---------------------------------------------------------------------------------


def test_the_predecessor_is_frozen_and_outside_the_parameters(teacher, tokenizer, batch):
    from lmshrink.config import TrainConfig
    from lmshrink.training.optim import build_optimizer

    model = theseus(teacher, tokenizer, replace_start=0.0)
    successor = model.successor
    assert {id(p) for p in model.parameters()} == {id(p) for p in successor.parameters()}
    optimizer, _ = build_optimizer(model, TrainConfig(lr=1e-3), 10)
    in_optimizer = sum(p.numel() for group in optimizer.param_groups for p in group["params"])
    assert in_optimizer == sum(p.numel() for p in successor.parameters())
    assert not any(p.requires_grad for p in model.predecessor.parameters())

    loss = model(**batch, labels=torch.zeros(6, dtype=torch.long)).loss  # predecessor path
    loss.backward()
    assert all(p.grad is None for p in model.predecessor.parameters())
    assert all(p.grad is None for p in successor.bert.encoder.layer.parameters())  # not run
    assert successor.bert.embeddings.word_embeddings.weight.grad is not None  # shared parts
    assert successor.classifier.weight.grad is not None
    before = [p.detach().clone() for p in model.predecessor.parameters()]
    optimizer.step()
    assert all(
        torch.equal(a, p) for a, p in zip(before, model.predecessor.parameters(), strict=True)
    )


def test_train_eval_and_to_reach_the_predecessor(teacher, tokenizer):
    model = theseus(teacher, tokenizer)
    model.eval()
    assert not any(m.training for m in model.predecessor.modules())
    model.train()
    assert all(m.training for m in model.predecessor.modules())
    model.to(torch.float64)
    assert all(p.dtype == torch.float64 for p in model.predecessor.parameters())


def test_layer_groups_are_the_successors(teacher, tokenizer):
    model = theseus(teacher, tokenizer)
    groups = model.layer_groups()
    assert [name for name, _ in groups] == ["embeddings", "layer.0", "layer.1", "classifier"]
    grouped = {id(p) for _, mods in groups for m in mods for p in m.parameters()}
    assert grouped == {id(p) for p in model.successor.parameters()}


# --- state and saving -------------------------------------------------------------------------


def test_state_dict_holds_the_successor_and_the_schedule_position(teacher, tokenizer, batch):
    model = theseus(teacher, tokenizer, replace_steps=10)
    for _ in range(4):
        model(**batch)
    state = model.state_dict()
    successor_keys = {f"successor.{k}" for k in model.successor.state_dict()}
    assert set(state) == successor_keys | {"replace_step"}

    resumed = theseus(teacher, tokenizer, replace_steps=10)  # a fresh run, at step 0
    resumed.load_state_dict(state)
    assert int(resumed.replace_step) == 4
    assert resumed.replace_probability() == model.replace_probability()

    older = {**state, "replace_step": torch.tensor(1)}  # e.g. the best weights of a stage
    model.load_state_dict(older)
    assert int(model.replace_step) == 4  # the schedule never moves back


def test_save_pretrained_writes_a_stock_folder_that_loads_without_lmshrink(
    teacher, tokenizer, batch, tmp_path
):
    from safetensors.torch import load_file

    model = theseus(teacher, tokenizer)
    model(**batch)  # one training step's draw; the saved model is the successor regardless
    model.save_pretrained(tmp_path / "model")
    saved = load_file(tmp_path / "model" / "model.safetensors")
    assert set(saved) == set(model.successor.state_dict())
    model.eval()
    with torch.no_grad():
        want = model(**batch).logits
    ids, mask = batch["input_ids"].tolist(), batch["attention_mask"].tolist()
    script = textwrap.dedent(
        f"""
        import json, sys, torch
        from transformers import AutoModelForSequenceClassification
        model = AutoModelForSequenceClassification.from_pretrained({str(tmp_path / "model")!r})
        assert "lmshrink" not in sys.modules
        with torch.no_grad():
            out = model(input_ids=torch.tensor({ids}), attention_mask=torch.tensor({mask}))
        print(json.dumps([type(model).__name__, model.config.num_hidden_layers,
                          out.logits.tolist()]))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    name, layers, logits = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (name, layers) == ("BertForSequenceClassification", 2)
    torch.testing.assert_close(torch.tensor(logits), want, rtol=0, atol=1e-6)


# --- settings ---------------------------------------------------------------------------------


def test_layers_must_split_the_teacher_into_equal_groups(teacher, tokenizer):
    with pytest.raises(
        ConfigError, match=r"teacher's 4 layers do not split into layers=3.*1, 2, 4"
    ):
        theseus(teacher, tokenizer, layers=3)
    model = theseus(teacher, tokenizer, layers=1)  # one group of all 4 layers
    assert model.group_size == 4 and model.successor.config.num_hidden_layers == 1
    six = bert_teacher(len(tokenizer), layers=6)
    default = build(six, tokenizer)  # layers defaults to 3
    assert (default.model.num_groups, default.model.group_size) == (3, 2)
    assert default.teacher_layers == [1, 3, 5]  # each group's last layer


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"layers": 0}, "layers must be a positive integer"),
        ({"replace_start": 1.5}, r"replace_start must be in \[0, 1\]"),
        ({"replace_start": "0.3"}, "replace_start must be a number"),
        ({"replace_steps": 0}, "replace_steps must be a positive integer"),
        ({"seed": 1.5}, "seed must be an integer"),
        ({"layer_ids": [1, 3]}, "layer_ids do not apply to the theseus student; it takes layers, "),
    ],
)
def test_bad_settings_are_refused(teacher, tokenizer, settings, message):
    with pytest.raises(ConfigError, match=message):
        theseus(teacher, tokenizer, **settings)


def test_roberta_teachers_work_and_unsupported_families_are_refused(tokenizer, batch):
    from transformers import (
        DistilBertConfig,
        DistilBertForSequenceClassification,
        RobertaConfig,
        RobertaForSequenceClassification,
    )

    torch.manual_seed(0)
    roberta = RobertaForSequenceClassification(
        RobertaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            **SST2,
        )
    ).eval()
    model = build(roberta, None, layers=2, replace_start=0.0, seed=0).model
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():  # p = 0: the teacher's function, through RoBERTa's sequence head
        torch.testing.assert_close(
            model(**inputs).logits, roberta(**inputs).logits, rtol=0, atol=1e-5
        )
    distil = DistilBertForSequenceClassification(
        DistilBertConfig(
            vocab_size=len(tokenizer), dim=32, n_layers=4, n_heads=2, hidden_dim=64, **SST2
        )
    )
    with pytest.raises(ConfigError, match="does not support DistilBertForSequenceClassification"):
        build(distil, None, layers=2)


# --- data-parallel ----------------------------------------------------------------------------

DDP_SCRIPT = """
import json, os, sys
import torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from transformers import BertConfig, BertForSequenceClassification
from lmshrink.students.theseus import TheseusSettings, build_theseus

rank = int(os.environ["RANK"])
dist.init_process_group("gloo")
torch.manual_seed(0)
config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                    intermediate_size=32, max_position_embeddings=32, num_labels=2)
teacher = BertForSequenceClassification(config).eval()
settings = TheseusSettings(layers=2, replace_start=0.5, replace_steps=6)
model = build_theseus(teacher, None, [], {"num_labels": 2}, 16, settings, seed=3).model
ddp = DistributedDataParallel(model, find_unused_parameters=True)
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
torch.manual_seed(100 + rank)  # each process its own data
record = []
for step in range(8):
    draws = model.replaced_groups(step)
    ids = torch.randint(1, 40, (4, 7))
    loss = ddp(input_ids=ids, attention_mask=torch.ones_like(ids),
               labels=torch.randint(0, 2, (4,))).loss
    loss.backward()
    layers = model.successor.bert.encoder.layer
    unused = [j for j, d in enumerate(draws) if not d]
    record.append({"draws": draws,
                   "unused_have_no_grad": all(p.grad is None for j in unused
                                              for p in layers[j].parameters())})
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
flat = torch.cat([p.detach().flatten() for p in model.parameters()])
json.dump({"steps": record, "params": flat.tolist()}, open(sys.argv[1], "w"))
dist.destroy_process_group()
"""


def test_two_processes_draw_the_same_groups_and_stay_in_sync(tmp_path):
    """DDP over two CPU processes on different data: the same groups are replaced on both
    (one graph), successor layers of unreplaced groups keep no gradient (as in one
    process, with find_unused_parameters=True), and the weights stay identical."""
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "WORLD_SIZE": "2",
        "OMP_NUM_THREADS": "1",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / f"rank{rank}.json")],
            env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    errors = [proc.communicate(timeout=240)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], errors
    a, b = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    assert [s["draws"] for s in a["steps"]] == [s["draws"] for s in b["steps"]]
    assert any(not all(s["draws"]) for s in a["steps"])  # some steps mixed the paths
    assert all(s["unused_have_no_grad"] for s in a["steps"] + b["steps"])
    assert a["steps"][-1]["draws"] == [True, True]  # p = 1 from step 6 on
    torch.testing.assert_close(torch.tensor(a["params"]), torch.tensor(b["params"]))
