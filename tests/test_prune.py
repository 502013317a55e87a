"""Pruning: importance scores, choosing what to keep, the prune workflow and its CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmshrink.compress.pruning import (
    Importance,
    choose_keep,
    compute_importance,
    encoder_parameters,
    from_bert,
    prune_to,
    unit_costs,
)
from lmshrink.data.batching import Encoded, collate
from lmshrink.prune import PruneConfig, prune

# The tiny teachers' sizes: 4 layers of 4 heads (width 8), FFN 64; two labels (SST-2).
TINY = dict(
    hidden_size=32,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=64,
    num_labels=2,
    initializer_range=0.2,
)


@pytest.fixture(scope="module")
def teacher_dir(tiny_encoder, tmp_path_factory) -> Path:
    """A 4-layer, 4-head tiny BERT classifier for SST-2 (random head) with the tiny tokenizer."""
    from conftest import tiny_bert_config
    from transformers import BertForSequenceClassification, BertTokenizer

    folder = tmp_path_factory.mktemp("teacher4")
    tokenizer = BertTokenizer.from_pretrained(tiny_encoder)
    torch.manual_seed(0)
    config = tiny_bert_config(vocab_size=tokenizer.vocab_size, max_position_embeddings=64, **TINY)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def roberta_dir(tmp_path_factory) -> Path:
    """A 4-layer, 4-head tiny RoBERTa classifier for SST-2 (random head) with a byte-level BPE
    tokenizer of single bytes (no merges): RoBERTa's ids (<s> 0, <pad> 1, </s> 2), one token
    type, positions offset by the padding id."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import RobertaConfig, RobertaForSequenceClassification, RobertaTokenizer

    folder = tmp_path_factory.mktemp("roberta4")
    tokens = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"] + sorted(ByteLevel.alphabet())
    tokenizer = RobertaTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[])
    torch.manual_seed(0)
    config = RobertaConfig(
        vocab_size=len(tokens),
        max_position_embeddings=66,  # 64 positions after the padding id's offset of 2
        type_vocab_size=1,
        **TINY,
    )
    RobertaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def load_teacher(folder: Path):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(folder).eval()


def labelled_batch(n: int = 24) -> Encoded:
    g = torch.Generator().manual_seed(3)
    ids = [[2] + torch.randint(5, 40, (5 + i % 4,), generator=g).tolist() + [3] for i in range(n)]
    return Encoded(
        features={"input_ids": ids, "token_type_ids": [[0] * len(row) for row in ids]},
        labels=[i % 2 for i in range(n)],
        pad_token_id=0,
    )


def test_silenced_head_and_neuron_get_zero_importance(teacher_dir):
    model = from_bert(load_teacher(teacher_dir))
    layer = model.layers[1]
    with torch.no_grad():
        layer.attention.output.dense.weight[:, 2 * 8 : 3 * 8] = 0  # head 2 feeds nothing
        layer.output.dense.weight[:, 5] = 0  # neuron 5 feeds nothing
    scores = compute_importance(model, labelled_batch(), batch_size=8, limit=24)
    assert [len(h) for h in scores.heads] == [4, 4, 4, 4]
    assert [len(n) for n in scores.neurons] == [64] * 4
    assert scores.heads[1][2] == 0
    assert scores.neurons[1][5] == 0
    others = torch.cat([scores.heads[1][:2], scores.heads[1][3:], scores.heads[0]])
    assert bool((others > 1e-6).all())
    assert int((scores.neurons[1] > 0).sum()) >= 60  # GELU units are rarely exactly idle
    assert scores.layers()[1] == pytest.approx(
        float(scores.heads[1].sum() + scores.neurons[1].sum())
    )


def test_choose_keep_meets_budget_and_keeps_best_units(teacher_dir):
    model = from_bert(load_teacher(teacher_dir))
    # Head (l, h) scores 1 + h; layer 3's neurons are worth more than the rest.
    heads = [torch.arange(1.0, 5.0) for _ in range(4)]
    neurons = [torch.linspace(1, 2, 64) * (10.0 if layer == 3 else 1.0) for layer in range(4)]
    total = encoder_parameters(model)
    budget = int(0.5 * total)
    keep_heads, keep_neurons = choose_keep(model, Importance(heads, neurons), budget)
    small = prune_to(model, keep_heads, keep_neurons)
    assert encoder_parameters(small) <= budget
    assert encoder_parameters(small) > 0.4 * total  # rounded down, not far below
    # Heads and neurons keep the same share f of their numbers, the largest that fits.
    head, neuron, fixed = unit_costs(model.config)
    share = (budget - 4 * fixed) / (16 * head + 4 * 64 * neuron)
    assert sum(map(len, keep_heads.values())) == int(share * 16)
    assert sum(map(len, keep_neurons.values())) == int(share * 256)
    # Normalised per layer, every layer ranks its heads alike: heads 3, then 2, are kept.
    assert all(ids and set(ids) <= {2, 3} and 3 in ids for ids in keep_heads.values())
    # Per-layer normalisation makes layer 3's larger raw scores no advantage.
    assert len(keep_neurons[3]) < 64


def test_a_layer_without_importance_goes_as_a_whole(teacher_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    import lmshrink  # noqa: F401

    model = from_bert(load_teacher(teacher_dir))
    heads = [torch.linspace(1, 2, 4) for _ in range(4)]
    neurons = [torch.linspace(1, 2, 64) for _ in range(4)]
    heads[2], neurons[2] = torch.zeros(4), torch.zeros(64)  # layer 2 does nothing for the loss
    scores = Importance(heads, neurons)
    assert scores.layers()[2] == 0
    keep_heads, keep_neurons = choose_keep(model, scores, int(0.6 * encoder_parameters(model)))
    assert keep_heads[2] == [] and keep_neurons[2] == []
    assert all(keep_heads[layer] and keep_neurons[layer] for layer in (0, 1, 3))
    small = prune_to(model, keep_heads, keep_neurons).eval()
    assert (small.config.heads_per_layer[2], small.config.intermediate_per_layer[2]) == (0, 0)
    small.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert loaded.config._attn_implementation == small.config._attn_implementation
    inputs = collate(labelled_batch(8), list(range(8)))
    inputs.pop("labels")
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).logits, small(**inputs).logits)


def test_encoder_parameter_count_matches_unit_costs(teacher_dir):
    model = from_bert(load_teacher(teacher_dir))
    small = prune_to(model, {0: [1], 1: [], 2: [0, 1, 2]}, {0: list(range(10)), 3: []})
    head, neuron, fixed = unit_costs(small.config)
    expected = sum(
        h * head + n * neuron + fixed
        for h, n in zip(
            small.config.heads_per_layer, small.config.intermediate_per_layer, strict=True
        )
    )
    assert encoder_parameters(small) == expected
    # The same count straight from the stock BERT's layers.
    bert = load_teacher(teacher_dir)
    assert encoder_parameters(model) == sum(p.numel() for p in bert.bert.encoder.layer.parameters())


def prune_config(teacher: Path, glue: Path, out: Path, **overrides) -> PruneConfig:
    from lmshrink.config import DataConfig, TrainConfig

    settings = dict(
        model=str(teacher),
        out=str(out),
        target_params=0.4,
        steps=2,
        recovery_steps=4,
        train=TrainConfig(lr=1e-3, batch_size=16, eval_batch_size=64),
        importance_examples=32,
        speed_examples=8,
        rounds=1,
        progress=False,
        data=DataConfig(task="sst2", data_dir=str(glue), max_length=32),
    )
    settings.update(overrides)
    return PruneConfig(**settings)


def test_prune_reaches_target_and_writes_report(teacher_dir, sst2_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    import lmshrink  # noqa: F401
    from lmshrink.models.loading import size_on_disk

    out = tmp_path / "pruned"
    report = prune(prune_config(teacher_dir, sst2_dir, out))
    total = report["encoder_parameters"]["unpruned"]
    kept = report["encoder_parameters"]["pruned"]
    assert total == encoder_parameters(from_bert(load_teacher(teacher_dir)))
    assert kept <= 0.4 * total
    assert report["encoder_sparsity"] == pytest.approx(1 - kept / total)
    assert report["encoder_sparsity"] >= 0.6
    assert "excluding embeddings" in report["sparsity_definition"]
    assert [h["step"] for h in report["history"]] == [1, 2]
    assert [h["recovery_steps"] for h in report["history"]] == [4, 4]
    assert all(h["recovery_loss"] > 0 for h in report["history"])
    assert report["history"][0]["encoder_parameters"] > kept  # iterative: 70% first, then 40%
    assert set(report["speedup"]) == {"1", "32"}
    assert report["retention"] == pytest.approx(
        report["score"]["pruned"] / report["score"]["unpruned"]
    )
    assert report["size_bytes"]["pruned"] == size_on_disk(out)
    assert report["size_bytes"]["pruned"] < report["size_bytes"]["unpruned"]
    assert json.loads((out / "prune.json").read_text())["encoder_parameters"]["pruned"] == kept
    assert json.loads((out / "lmshrink.json").read_text())["task"] == "sst2"

    loaded = AutoModelForSequenceClassification.from_pretrained(out)
    assert loaded.config.heads_per_layer == report["heads_per_layer"]
    assert encoder_parameters(loaded) == kept
    assert report["parameters"]["pruned"] == sum(p.numel() for p in loaded.parameters())
    assert (out / "tokenizer_config.json").is_file()


def test_prune_a_roberta_then_load_it(roberta_dir, sst2_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import lmshrink  # noqa: F401
    from lmshrink.models.pruned_bert import PrunedBertForSequenceClassification

    out = tmp_path / "pruned-roberta"
    report = prune(prune_config(roberta_dir, sst2_dir, out))
    kept, total = report["encoder_parameters"]["pruned"], report["encoder_parameters"]["unpruned"]
    assert kept <= 0.4 * total
    assert total == sum(p.numel() for p in load_teacher(roberta_dir).roberta.encoder.parameters())
    assert all(h["recovery_loss"] > 0 for h in report["history"])

    loaded = AutoModelForSequenceClassification.from_pretrained(out)
    assert type(loaded) is PrunedBertForSequenceClassification
    assert loaded.config.family == "roberta"
    assert (loaded.config.pad_token_id, loaded.config.type_vocab_size) == (1, 1)
    assert loaded.config.heads_per_layer == report["heads_per_layer"]
    assert encoder_parameters(loaded) == kept
    assert type(AutoTokenizer.from_pretrained(out)).__name__ == "RobertaTokenizer"
    # With nothing removed and nothing trained, the saved model computes what the stock
    # RoBERTa computes: the conversion kept its positions, token type and head.
    same = tmp_path / "unchanged"
    prune(prune_config(roberta_dir, sst2_dir, same, target_params=1.0, steps=1, recovery_steps=0))
    tokenizer = AutoTokenizer.from_pretrained(same)
    batch = tokenizer(["the movie was good", "dull"], padding=True, return_tensors="pt")
    assert int(batch["attention_mask"].sum()) < batch["attention_mask"].numel()  # padded
    with torch.no_grad():
        got = AutoModelForSequenceClassification.from_pretrained(same)(**batch).logits
        expected = load_teacher(roberta_dir)(**batch).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert loaded(**batch).logits.shape == (2, 2)


def scripted_speed(monkeypatch, ratios: list[float]) -> None:
    """Replace the speed measurement by one answering `ratios` in turn (the pruned model's
    ratio to the unpruned one at every batch size), so that when a speed target is reached
    does not depend on the machine."""
    import lmshrink.measure.speed as speed

    answers = iter(ratios)

    def measure(models, batch_sizes=(1, 32), limit=None, rounds=3):
        ratio = next(answers)
        return {
            "batch_sizes": list(batch_sizes),
            "rounds": rounds,
            "ratio": {
                "unpruned": {str(b): 1.0 for b in batch_sizes},
                "pruned": {str(b): ratio for b in batch_sizes},
            },
        }

    monkeypatch.setattr(speed, "measure_speed", measure)


def test_prune_towards_a_speedup_stops_at_the_first_step_that_reaches_it(
    teacher_dir, sst2_dir, tmp_path, monkeypatch
):
    # Measured after steps 1, 2 and 3, then once more for the report.
    scripted_speed(monkeypatch, [1.1, 1.2, 1.4, 1.45])
    cfg = prune_config(
        teacher_dir,
        sst2_dir,
        tmp_path / "fast",
        target_params=0.0,
        target_speedup=1.3,
        final_recovery_steps=6,
    )
    report = prune(cfg)
    history = report["history"]
    assert [h["speedup_32"] for h in history] == [1.1, 1.2, 1.4]
    # The longer final recovery follows the last pruning step only.
    assert [h["recovery_steps"] for h in history] == [4, 4, 6]
    # Each step keeps (1/1.3)^(1/steps) of the previous step's share.
    assert [h["target_share"] for h in history] == [round(1.3 ** (-k / 2), 4) for k in (1, 2, 3)]
    assert report["target_reached"] is True and report["speedup"] == {"1": 1.45, "32": 1.45}
    assert report["target"] == {"params": None, "speedup": 1.3}


def test_an_unmet_speedup_gives_up_after_three_times_the_steps(
    teacher_dir, sst2_dir, tmp_path, monkeypatch
):
    scripted_speed(monkeypatch, [1.05] * 7)
    cfg = prune_config(
        teacher_dir, sst2_dir, tmp_path / "slow", target_params=0.0, target_speedup=1.3
    )
    report = prune(cfg)
    assert [h["step"] for h in report["history"]] == [1, 2, 3, 4, 5, 6]  # 3 x steps
    assert report["target_reached"] is False


def test_an_unreachable_speedup_stops_when_nothing_is_left_to_prune(
    teacher_dir, sst2_dir, tmp_path
):
    from transformers import AutoModelForSequenceClassification

    import lmshrink  # noqa: F401

    out = tmp_path / "bare"
    cfg = prune_config(teacher_dir, sst2_dir, out, target_params=0.0, target_speedup=1000.0)
    report = prune(cfg)  # the share falls below what pruning can remove at step 2
    assert len(report["history"]) == 2 < 3 * cfg.steps
    assert report["target_reached"] is False
    assert report["heads_per_layer"] == [0] * 4
    assert report["intermediate_per_layer"] == [0] * 4
    _, _, fixed = unit_costs(load_teacher(teacher_dir).config)
    assert report["encoder_parameters"]["pruned"] == 4 * fixed
    # Every layer removed as a whole: the model still loads and predicts.
    loaded = AutoModelForSequenceClassification.from_pretrained(out).eval()
    inputs = collate(labelled_batch(4), list(range(4)))
    inputs.pop("labels")
    with torch.no_grad():
        assert torch.isfinite(loaded(**inputs).logits).all()


def test_prune_refuses_bad_targets(teacher_dir, sst2_dir, tmp_path):
    from lmshrink.errors import ConfigError

    with pytest.raises(ConfigError, match="exactly one target"):
        prune(prune_config(teacher_dir, sst2_dir, tmp_path / "a", target_params=0.0))
    with pytest.raises(ConfigError, match="exactly one target"):
        prune(prune_config(teacher_dir, sst2_dir, tmp_path / "b", target_speedup=2.0))
    with pytest.raises(ConfigError, match="LayerNorms and output biases"):
        prune(prune_config(teacher_dir, sst2_dir, tmp_path / "c", target_params=0.001))
    assert not (tmp_path / "c").exists() and not (tmp_path / "c.work").exists()
    cfg = prune_config(teacher_dir, sst2_dir, tmp_path / "d")
    cfg.train.epochs = 2
    with pytest.raises(ConfigError, match=r"^train.epochs: not used by prune"):
        prune(cfg)


def test_cli_refuses_a_bilstm_folder(tiny_encoder, sst2_dir, tmp_path, capsys):
    from transformers import BertTokenizer

    from lmshrink.cli import main
    from lmshrink.models.bilstm import BiLSTMConfig, BiLSTMForSequenceClassification

    tokenizer = BertTokenizer.from_pretrained(tiny_encoder)
    folder = tmp_path / "bilstm"
    config = BiLSTMConfig(
        vocab_size=tokenizer.vocab_size, embedding_dim=8, hidden_size=8, num_labels=2
    )
    BiLSTMForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    argv = ["prune", str(folder), "--task", "sst2", "--data-dir", str(sst2_dir)]
    argv += ["--target-params", "0.5", "--out", str(tmp_path / "out")]
    capsys.readouterr()  # drop the save progress bars
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"error: {folder}: pruning supports BERT-family encoders" in err
    assert "this is a BiLSTM student" in err
    assert "Traceback" not in err
    assert "use distill with a smaller student" in err
    assert not (tmp_path / "out").exists()


def test_killed_prune_resumes_to_the_same_model(teacher_dir, sst2_dir, tmp_path):
    """Killed inside a recovery phase, and between two pruning steps: --resume ends with the
    model and report of an uninterrupted run."""
    from safetensors.torch import load_file

    from lmshrink.errors import RunFolderError
    from lmshrink.training.callbacks import Callback, KillAt, SimulatedKill

    class StepLog(Callback):
        def __init__(self):
            self.steps = []

        def on_step_end(self, phase, state):
            self.steps.append((phase.tag, state.step))

    def comparable(report):
        history = [{k: v for k, v in h.items() if k != "seconds"} for h in report["history"]]
        keys = ("dev", "encoder_parameters", "heads_per_layer", "intermediate_per_layer")
        return history, [report[k] for k in keys]

    settings = dict(recovery_steps=6, checkpoint_every=4)
    whole = prune(prune_config(teacher_dir, sst2_dir, tmp_path / "whole", **settings))
    expected = load_file(tmp_path / "whole" / "model.safetensors")
    cases = [
        # (where the kill comes, the checkpoint left, the steps the resumed run trains)
        (
            KillAt(5, phase="1"),
            "step-1-0000004",
            [("1", 5), ("1", 6)] + [("2", i) for i in range(1, 7)],
        ),
        (KillAt(2, phase="2"), "step-1-0000006", [("2", i) for i in range(1, 7)]),
    ]
    for i, (kill, left, trained) in enumerate(cases):
        out = tmp_path / f"killed{i}"
        cfg = prune_config(teacher_dir, sst2_dir, out, **settings)
        with pytest.raises(SimulatedKill):
            prune(cfg, callbacks=[kill])
        assert not out.exists()
        assert (tmp_path / f"killed{i}.work" / "checkpoints" / "latest").read_text() == left
        cfg.resume = True
        log = StepLog()
        report = prune(cfg, callbacks=[log])
        assert log.steps == trained
        assert comparable(report) == comparable(whole)
        got = load_file(out / "model.safetensors")
        assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)
        assert not (tmp_path / f"killed{i}.work").exists()
    with pytest.raises(RunFolderError, match="no run to resume"):
        prune(cfg)  # finished: nothing left to resume


def test_old_prune_keys_name_their_new_place():
    from lmshrink.config import ConfigError, from_dict

    for old, new in (("lr", "train.lr"), ("batch_size", "train.batch_size")):
        with pytest.raises(ConfigError, match=f"config key '{old}' is now '{new}'"):
            from_dict(PruneConfig, {old: 1})
    cfg = from_dict(PruneConfig, {"train": {"lr": 1e-4}})
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.weight_decay) == (1e-4, 32, 0.01)
    assert (cfg.train.warmup_ratio, cfg.train.max_grad_norm) == (0.1, 1.0)


def test_prune_flags_keep_their_names(tmp_path):
    from lmshrink.cli import _build_config, build_parser

    parser, dests = build_parser()
    argv = ["prune", "m", "--lr", "2e-4", "--batch-size", "8", "--resume", "--threads", "1"]
    cfg = _build_config(PruneConfig, parser.parse_args(argv), dests["prune"])
    assert (cfg.train.lr, cfg.train.batch_size, cfg.resume, cfg.threads) == (2e-4, 8, True, 1)
