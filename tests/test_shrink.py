"""`lmshrink shrink`: the grid, the plan, and a whole search on tiny models."""

from __future__ import annotations

import json

import pytest

from lmshrink.errors import ConfigError, LmshrinkError
from lmshrink.search import plan
from lmshrink.search.candidates import (
    ONNX_BACKENDS,
    Architecture,
    architectures,
    parse_architecture,
)


def test_parse_architecture_reads_family_and_settings():
    arch = parse_architecture("bilstm:embedding_dim=64,hidden_size=256")
    assert arch.family == "bilstm"
    assert dict(arch.settings) == {"embedding_dim": 64, "hidden_size": 256}
    assert arch.name == "bilstm-embedding_dim64-hidden_size256"
    assert arch.spec == "bilstm:embedding_dim=64:hidden_size=256"
    assert parse_architecture(arch.spec) == arch
    assert arch.size == 64 * 256
    assert parse_architecture("fasttext").backends == ("fasttext",)
    assert parse_architecture("static:embedding_dim=8").backends == (
        "onnx-fp32",
        "onnx-int8",
        "onnx-int8-static",
    )


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("lstm:hidden_size=3", "unknown family 'lstm'"),
        ("bilstm:hidden_size", "is not key=value"),
        ("teacher:layers=3", "takes no settings"),
    ],
)
def test_parse_architecture_errors_name_the_form(spec, says):
    with pytest.raises(ConfigError, match=says):
        parse_architecture(spec)


def test_architectures_add_the_teacher_and_order_by_prior():
    archs = architectures(
        ["static:embedding_dim=8", "bilstm:hidden_size=8", "layers:layers=2"], False
    )
    assert [a.family for a in archs] == ["teacher", "layers", "bilstm", "static"]
    with pytest.raises(ConfigError, match="cannot tag words"):
        architectures(["static:embedding_dim=8"], token_level=True)
    token_grid = architectures([], token_level=True)
    assert {a.family for a in token_grid} == {"teacher", "layers", "bilstm"}


def test_the_searched_onnx_backends_are_the_folders_export_and_quantize_write():
    # candidates.py names them without importing the exporters (which pull in torch);
    # latency.export_model writes onnx-fp32/ and one folder per int8 mode
    from lmshrink.compress.int8 import ONNX_INT8_FOLDERS

    assert ("onnx-fp32", *ONNX_INT8_FOLDERS.values()) == ONNX_BACKENDS


@pytest.mark.parametrize("token_level", [False, True])
def test_every_default_candidate_has_settings_its_family_takes(token_level):
    from lmshrink.config import from_dict
    from lmshrink.distill import DistillConfig
    from lmshrink.students import student_settings

    for arch in architectures([], token_level):
        if arch.family in ("layers", "bilstm", "static"):
            block = {"kind": arch.family, **dict(arch.settings)}
            chosen = student_settings(from_dict(DistillConfig, {"student": block}).student)
            for key, value in arch.settings:
                assert getattr(chosen, key) == value, (arch.name, key)
    statics = [a for a in architectures([], False) if a.family == "static"]
    assert max(statics, key=lambda a: a.size).settings == (
        ("embedding_dim", 256),
        ("hidden_size", 256),
        ("bigram_buckets", 16384),
    )


def test_training_order_takes_the_largest_that_fits_in_each_family():
    archs = architectures(
        [
            "bilstm:hidden_size=256",
            "bilstm:hidden_size=64",
            "bilstm:hidden_size=16",
            "static:embedding_dim=64",
            "layers:layers=3",
        ],
        False,
    )
    fitting = {
        "teacher/onnx-int8",
        "bilstm-hidden_size64/onnx-int8",
        "bilstm-hidden_size16/onnx-fp32",
        "static-embedding_dim64/onnx-fp32",
    }
    order = plan.training_order(archs, fitting, per_family=1, max_candidates=0)
    assert [a.name for a in order] == ["bilstm-hidden_size64", "static-embedding_dim64"]
    two = plan.training_order(archs, fitting, per_family=2, max_candidates=0)
    assert [a.name for a in two][:2] == ["bilstm-hidden_size64", "bilstm-hidden_size16"]
    capped = plan.training_order(archs, fitting, per_family=2, max_candidates=1)
    assert [a.name for a in capped] == ["bilstm-hidden_size64"]


def _state(latency, scores):
    return {"latency": latency, "scores": scores}


def test_rows_and_winner_respect_budget_and_retention(tmp_path):
    archs = architectures(["bilstm:hidden_size=8", "static:embedding_dim=8"], False)
    ms = {"p95_ms": 0, "per_second_b32": 1.0}
    latency = {
        "teacher/onnx-fp32": {"p50_ms": 5.0, **ms},
        "teacher/onnx-int8": {"p50_ms": 2.0, **ms},
        "bilstm-hidden_size8/onnx-fp32": {"p50_ms": 0.8, **ms},
        "bilstm-hidden_size8/onnx-int8": {"p50_ms": 0.4, **ms},
        "static-embedding_dim8/onnx-fp32": {"p50_ms": 0.1, **ms},
        "static-embedding_dim8/onnx-int8": {"p50_ms": 0.09, **ms},
    }

    def scored(v):
        return {"score": v, "metrics": {"accuracy": v}}

    scores = {
        "teacher/onnx-fp32": scored(0.90),
        "teacher/onnx-int8": scored(0.89),
        "bilstm-hidden_size8/onnx-fp32": scored(0.88),
        "bilstm-hidden_size8/onnx-int8": scored(0.87),
        "static-embedding_dim8/onnx-fp32": scored(0.80),
        "static-embedding_dim8/onnx-int8": scored(0.81),
    }
    rows = plan.rows(archs, _state(latency, scores), budget_ms=1.0, min_retention=0.0)
    assert plan.winner(rows)["name"] == "bilstm-hidden_size8/onnx-fp32"
    by_name = {r["name"]: r for r in rows}
    assert by_name["teacher/onnx-int8"]["fits_budget"] is False
    assert by_name["bilstm-hidden_size8/onnx-int8"]["retention"] == pytest.approx(0.87 / 0.90)
    tight = plan.rows(archs, _state(latency, scores), budget_ms=0.5, min_retention=0.0)
    assert plan.winner(tight)["name"] == "bilstm-hidden_size8/onnx-int8"
    strict = plan.rows(archs, _state(latency, scores), budget_ms=0.2, min_retention=0.95)
    assert plan.winner(strict) is None
    message = plan.why_nothing_fits(strict, 0.2, 0.95, tmp_path)
    assert "static-embedding_dim8/onnx-int8 with 90.0%" in message
    assert "lower --min-retention" in message
    none_fast = plan.rows(archs, _state(latency, scores), budget_ms=0.01, min_retention=0.0)
    assert "fastest is static-embedding_dim8/onnx-int8" in plan.why_nothing_fits(
        none_fast, 0.01, 0.0, tmp_path
    )


def _shrink_config(tiny_teacher, out, **given):
    from lmshrink.config import from_dict
    from lmshrink.shrink import ShrinkConfig

    raw = {
        "teacher": str(tiny_teacher["teacher"]),
        "out": str(out),
        "progress": False,
        "budget_ms": 1000.0,
        "candidates": [
            "bilstm:embedding_dim=8,hidden_size=8",
            "static:embedding_dim=8",
            "fasttext:dim=8:bucket=1000",
        ],
        "speed_examples": 8,
        "rounds": 1,
        "data": {"task": "sst2", "data_dir": str(tiny_teacher["glue"]), "max_length": 32},
        "transfer": {"files": [str(tiny_teacher["transfer"])], "min_words": 1},
        **given,
    }
    return from_dict(ShrinkConfig, raw)


@pytest.fixture(scope="module")
def finished_search(tiny_teacher, tmp_path_factory):
    from lmshrink.shrink import shrink

    out = tmp_path_factory.mktemp("shrink") / "search"
    state = shrink(_shrink_config(tiny_teacher, out))
    return out, state


def test_a_search_times_trains_scores_and_chooses(finished_search):
    out, state = finished_search
    names = {r["name"] for r in state["rows"]}
    assert names == {
        f"{a}/{b}"
        for a in ("teacher", "bilstm-embedding_dim8-hidden_size8", "static-embedding_dim8")
        for b in ("onnx-fp32", "onnx-int8", "onnx-int8-static")
    } | {"fasttext-dim8-bucket1000/fasttext"}
    assert state["trained"] == [
        "teacher",
        "bilstm-embedding_dim8-hidden_size8",
        "static-embedding_dim8",
        "fasttext-dim8-bucket1000",
    ]
    # fastText learned from the teacher's labels of the whole transfer set (train inputs
    # and the unlabeled file, read from the shared cache) plus the 160 gold rows
    meta = json.loads(
        (out / "candidates" / "fasttext-dim8-bucket1000" / "fasttext" / "fasttext.json").read_text()
    )
    static_run = out / "candidates" / "static-embedding_dim8" / "run" / "report.json"
    transfer = json.loads(static_run.read_text())["transfer_set"]
    assert meta["train_rows"] == transfer["total"] - transfer["dev_overlap_dropped"] + 160
    rows = {r["name"]: r for r in state["rows"]}
    assert all(r["p50_ms"] > 0 and r["score"] is not None for r in rows.values())
    assert rows["teacher/onnx-fp32"]["retention"] == pytest.approx(1.0)
    winner = rows[state["winner"]]
    assert winner["score"] == max(r["score"] for r in rows.values())
    best = out / "best"
    served = ("model.bin", "fasttext.json") if winner["backend"] == "fasttext" else None
    served = served or ("model.onnx", "export.json")
    assert all((best / name).is_file() for name in served)
    assert state["winner"] in (best / "README.md").read_text()
    report = (out / "report.md").read_text()
    assert "Winner: **" in report and "teacher/onnx-int8" in report
    saved = json.loads((out / "shrink.json").read_text())
    assert saved["winner"] == state["winner"]
    # the students were trained as ordinary distill runs sharing one teacher cache
    assert (out / "candidates" / "static-embedding_dim8" / "run" / "report.json").is_file()
    assert len(list((out / "cache").iterdir())) >= 1
    assert not (out / "candidates" / "bilstm-embedding_dim8-hidden_size8" / "cache").exists()


def test_static_int8_is_calibrated_on_train_and_the_card_says_how_it_serves(finished_search):
    from lmshrink.compress.int8 import CALIBRATION_EXAMPLES
    from lmshrink.search.latency import TIMING_CALIBRATION_EXAMPLES
    from lmshrink.search.report import model_card

    out, state = finished_search

    def calibration(folder):
        int8 = json.loads((folder / "onnx-int8-static" / "export.json").read_text())["int8"]
        assert int8["mode"] == "static" and int8["calibration"]["split"] == "train"
        return int8["calibration"]

    # an untrained student is only timed: a few examples give its graph the right shape
    untrained = calibration(out / "latency" / "static-embedding_dim8")
    assert untrained["examples"] == TIMING_CALIBRATION_EXAMPLES
    # what is scored and served is calibrated as lmshrink quantize calibrates (the tiny
    # train split has 160 rows, fewer than the default), on the search's seed
    for served in (out / "latency" / "teacher", out / "candidates" / "static-embedding_dim8"):
        assert calibration(served)["source"] == untrained["source"]
        assert calibration(served)["examples"] == min(CALIBRATION_EXAMPLES, 160)
        assert calibration(served)["seed"] == 42
    rows = {r["name"]: r for r in state["rows"]}
    card = model_card(rows["static-embedding_dim8/onnx-int8-static"], _Task())
    assert "same prediction alone or in any batch" in card
    assert "can change with what else is in its batch" in model_card(
        rows["static-embedding_dim8/onnx-int8"], _Task()
    )


class _Task:
    name = "sst2"


def test_resume_keeps_finished_work_and_rechooses_under_a_new_budget(finished_search, tiny_teacher):
    from lmshrink.shrink import NoModelFits, shrink

    out, state = finished_search
    report = out / "candidates" / "static-embedding_dim8" / "run" / "report.json"
    before = report.stat().st_mtime_ns
    rows = {r["name"]: r for r in state["rows"]}
    quickest = min(rows.values(), key=lambda r: r["p50_ms"])
    # a budget only the quickest candidate meets: the choice changes, nothing is retrained
    budget = quickest["p50_ms"] * 1.0001
    again = shrink(_shrink_config(tiny_teacher, out, resume=True, budget_ms=budget))
    assert again["winner"] == quickest["name"] or rows[again["winner"]]["p50_ms"] <= budget
    assert report.stat().st_mtime_ns == before
    with pytest.raises(NoModelFits, match="raise --budget-ms"):
        shrink(_shrink_config(tiny_teacher, out, resume=True, budget_ms=1e-6))
    with pytest.raises(LmshrinkError, match="candidates differ"):
        shrink(_shrink_config(tiny_teacher, out, resume=True, candidates=["teacher"]))


def test_the_teacher_is_scored_when_nothing_fits(tiny_teacher, tmp_path):
    """The teacher is every retention's reference: a search whose budget nothing meets
    still scores it, and says which candidate was fastest."""
    from lmshrink.shrink import NoModelFits, shrink

    out = tmp_path / "search"
    cfg = _shrink_config(tiny_teacher, out, budget_ms=1e-6, candidates=["static:embedding_dim=8"])
    with pytest.raises(NoModelFits, match="fastest is"):
        shrink(cfg)
    state = json.loads((out / "shrink.json").read_text())
    assert state["trained"] == ["teacher"]
    assert {f"teacher/{b}" for b in ONNX_BACKENDS} == set(state["scores"])
    for timing in state["latency"].values():  # one p50 per round (_shrink_config: 1 round)
        assert len(timing["round_p50_ms"]) == 1 and timing["round_p50_ms"][0] > 0
    assert (out / "report.md").is_file() and not (out / "best").exists()


def test_shrink_refuses_a_missing_budget(tiny_teacher, tmp_path):
    from lmshrink.shrink import shrink

    with pytest.raises(ConfigError, match="--budget-ms must be a positive"):
        shrink(_shrink_config(tiny_teacher, tmp_path / "out", budget_ms=0))


def test_shrink_on_the_command_line(finished_search, tiny_teacher, capsys):
    from lmshrink.cli import main

    out, _ = finished_search
    code = main(
        [
            "shrink",
            str(tiny_teacher["teacher"]),
            "--budget-ms",
            "1000",
            "--out",
            str(out),
            "--resume",
            "--candidates",
            "bilstm:embedding_dim=8:hidden_size=8,static:embedding_dim=8,"
            "fasttext:dim=8:bucket=1000",
            "--speed-examples",
            "8",
            "--rounds",
            "1",
            "--no-progress",
            "--task",
            "sst2",
            "--data-dir",
            str(tiny_teacher["glue"]),
            "--max-length",
            "32",
            "--transfer",
            str(tiny_teacher["transfer"]),
            "--min-words",
            "1",
        ]
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "best within 1000 ms" in printed.out
    state = json.loads((out / "shrink.json").read_text())
    winner = {r["name"]: r for r in state["rows"]}[state["winner"]]
    assert f"dev {100 * winner['score']:.2f} (" in printed.out


def test_architecture_prior_is_family_then_size():
    small = Architecture("bilstm", (("hidden_size", 8),))
    large = Architecture("bilstm", (("hidden_size", 64),))
    assert sorted([small, large], key=Architecture.prior) == [large, small]


def _search(teacher, task, data_dir, out, candidates, **given):
    from lmshrink.config import from_dict
    from lmshrink.shrink import ShrinkConfig, shrink

    raw = {
        "teacher": str(teacher),
        "out": str(out),
        "progress": False,
        "budget_ms": 1000.0,
        "candidates": candidates,
        "speed_examples": 4,
        "rounds": 1,
        "data": {"task": task, "data_dir": str(data_dir), "max_length": 32},
        **given,
    }
    return shrink(from_dict(ShrinkConfig, raw))


def test_a_search_on_a_token_task_chooses_a_tagger(tmp_path, tiny_encoder, tiny_prune):
    """NER: the students (a BiLSTM tagger, the pruned teacher) tag words; the search scores
    them by entity F1 and refuses the sentence-only families."""
    from test_distill_tokens import write_conll_folder

    from lmshrink.config import DataConfig, TrainConfig
    from lmshrink.finetune import FinetuneConfig, finetune

    write_conll_folder(tmp_path / "data", train=60, dev=20)
    data = DataConfig(task="conll2003", data_dir=str(tmp_path / "data"), max_length=32)
    train = TrainConfig(epochs=6, batch_size=16, lr=4e-3, eval_batch_size=64)
    teacher = tmp_path / "teacher"
    finetune(
        FinetuneConfig(
            model=str(tiny_encoder), out=str(teacher), progress=False, data=data, train=train
        )
    )
    state = _search(
        teacher, "conll2003", tmp_path / "data", tmp_path / "search",
        ["bilstm:embedding_dim=8:hidden_size=8", "pruned:keep=0.6"],
    )  # fmt: skip
    rows = {r["name"]: r for r in state["rows"]}
    assert set(rows) == {
        f"{a}/{b}" for a in ("teacher", "bilstm-embedding_dim8-hidden_size8", "pruned-keep0.6")
        for b in ONNX_BACKENDS
    }  # fmt: skip
    run = tmp_path / "search" / "candidates" / "pruned-keep0.6" / "run"
    assert json.loads((run / "prune.json").read_text())["task"] == "conll2003"  # by prune
    assert rows["pruned-keep0.6/onnx-fp32"]["score"] is not None
    assert all(set(r["metrics"]) >= {"entity_f1"} for r in rows.values())
    assert (tmp_path / "search" / "best" / "model.onnx").is_file()
    with pytest.raises(ConfigError, match="cannot tag words"):
        _search(teacher, "conll2003", tmp_path / "data", tmp_path / "s2", ["static"])


def test_a_search_on_a_regression_pair_task_drops_fasttext(tmp_path, tiny_encoder):
    """STS-B: sentence pairs and a score; fastText (classes only) is left out of the
    default grid with a note, and refused when named."""
    from conftest import STSB_HEADER, make_sentences, tiny_finetune_config, write_tsv

    from lmshrink.finetune import finetune

    glue = tmp_path / "glue"
    for split, n, seed in (("train", 80, 1), ("dev", 24, 2)):
        rows = [
            [str(i), "g", "f", "y", str(i), "n", "n", s, s[::-1], f"{4.0 * int(y) + 0.5:.1f}"]
            for i, (s, y) in enumerate(make_sentences(n, seed))
        ]
        write_tsv(glue / "STS-B" / f"{split}.tsv", STSB_HEADER, rows)
    cfg = tiny_finetune_config(tiny_encoder, glue, tmp_path / "teacher", epochs=3)
    cfg.data.task = "stsb"
    finetune(cfg)
    with pytest.raises(ConfigError, match="fastText labels classes"):
        _search(tmp_path / "teacher", "stsb", glue, tmp_path / "s1", ["fasttext"])
    state = _search(tmp_path / "teacher", "stsb", glue, tmp_path / "s2", ["static:embedding_dim=8"])
    rows = {r["name"]: r for r in state["rows"]}
    assert set(rows) == {
        f"{a}/{b}" for a in ("teacher", "static-embedding_dim8") for b in ONNX_BACKENDS
    }  # fmt: skip
    assert all(set(r["metrics"]) == {"pearson", "spearman"} for r in rows.values())
    assert state["winner"] in rows


def test_a_killed_search_resumes_without_redoing_finished_work(
    finished_search, tiny_teacher, tmp_path, monkeypatch
):
    """A search stopped while training its second candidate continues with --resume: the
    first candidate's run is kept, and the scores equal those of the uninterrupted search
    (the same seed, data and teacher cache key)."""
    import lmshrink.shrink as command

    _, uninterrupted = finished_search
    real = command._distill
    calls = []

    def dies_on_the_second(raw):
        calls.append(raw["out"])
        if len(calls) == 2:
            raise KeyboardInterrupt  # as Ctrl-C outside a training loop
        return real(raw)

    out = tmp_path / "search"
    monkeypatch.setattr(command, "_distill", dies_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        command.shrink(_shrink_config(tiny_teacher, out))
    first = out / "candidates" / "bilstm-embedding_dim8-hidden_size8" / "run" / "report.json"
    kept = first.stat().st_mtime_ns
    monkeypatch.setattr(command, "_distill", real)
    state = command.shrink(_shrink_config(tiny_teacher, out, resume=True))
    assert first.stat().st_mtime_ns == kept
    assert state["trained"] == uninterrupted["trained"]
    for name, scored in uninterrupted["scores"].items():
        assert state["scores"][name]["score"] == pytest.approx(scored["score"]), name


def test_pruned_teachers_come_after_the_teacher_and_before_the_students():
    archs = architectures(
        ["layers:layers=2", "pruned:keep=0.3", "bilstm:hidden_size=8", "pruned:keep=0.5"], False
    )
    assert [a.name for a in archs] == [
        "teacher",
        "pruned-keep0.5",
        "pruned-keep0.3",
        "layers-layers2",
        "bilstm-hidden_size8",
    ]
    fitting = {
        "pruned-keep0.5/onnx-int8",
        "pruned-keep0.3/onnx-fp32",
        "layers-layers2/onnx-int8",
        "bilstm-hidden_size8/onnx-int8",
    }
    order = plan.training_order(archs, fitting, per_family=1, max_candidates=0)
    assert [a.name for a in order] == ["pruned-keep0.5", "layers-layers2", "bilstm-hidden_size8"]
    only = plan.training_order(archs, fitting - {"pruned-keep0.5/onnx-int8"}, 1, max_candidates=1)
    assert [a.name for a in only] == ["pruned-keep0.3"]
    default = architectures([], token_level=False)
    assert [a.spec for a in default if a.family == "pruned"] == [
        "pruned:keep=0.5",
        "pruned:keep=0.3",
    ]


@pytest.mark.parametrize("spec", ["pruned", "pruned:keep=1", "pruned:keep=0", "pruned:share=0.5"])
def test_a_pruned_candidate_needs_a_kept_share(spec):
    with pytest.raises(ConfigError, match="takes one setting, keep"):
        architectures([spec], token_level=False)


def test_a_token_task_prunes_only_when_asked():
    named = architectures(["pruned:keep=0.5"], token_level=True)
    assert [a.name for a in named] == ["teacher", "pruned-keep0.5"]
    assert not any(a.family == "pruned" for a in architectures([], token_level=True))


def test_a_teacher_prune_cannot_cut_loses_the_pruned_candidates():
    """A teacher that is no BERT-family classifier: the default grid drops the pruned
    candidates with a note; a grid that names one says why."""
    from types import SimpleNamespace

    from lmshrink.data.tasks import get_task

    other = SimpleNamespace(config=SimpleNamespace(model_type="distilbert"))
    notes = []
    archs = plan.usable_architectures([], get_task("sst2"), notes.append, other)
    assert archs and not [a for a in archs if a.family == "pruned"]
    assert any("no pruned candidate" in n and "distilbert" in n for n in notes)
    with pytest.raises(ConfigError, match="--candidates pruned: the teacher: pruning supports"):
        plan.usable_architectures(["pruned:keep=0.5"], get_task("sst2"), notes.append, other)


def test_the_untrained_pruned_teacher_has_the_pruned_shape(tiny_teacher):
    """Latency is measured on the teacher cut to the kept share: every layer keeps the same
    number of heads and neurons (within one), the first ones, and the teacher is untouched."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from lmshrink.compress.pruning import encoder_parameters, from_bert
    from lmshrink.search.latency import pruned_untrained

    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_teacher["teacher"])
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    small = pruned_untrained(teacher, 0.6)
    assert small.config.heads_per_layer == [1, 1]
    assert small.config.intermediate_per_layer in ([38, 37], [37, 38])
    assert encoder_parameters(small) <= 0.6 * encoder_parameters(from_bert(teacher))
    query = teacher.bert.encoder.layer[1].attention.self.query.weight
    kept = small.layers[1].attention.self.query.weight  # [16, 32]: the first head's rows
    assert torch.equal(kept, query[:16])
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())


def test_a_pruned_candidate_resumes_its_prune(tmp_path):
    from lmshrink.search import recipes, train
    from lmshrink.shrink import ShrinkConfig

    arch = parse_architecture("pruned:keep=0.5")
    cfg = ShrinkConfig(teacher="teacher-folder", budget_ms=1.0)
    run = tmp_path / "candidates" / arch.name / "run"
    fresh = train.prune_config(arch, cfg, run)
    assert (fresh["resume"], fresh["overwrite"]) == (False, True)
    assert fresh["target_params"] == 0.5 and fresh["model"] == "teacher-folder"
    assert fresh["recovery_steps"] == recipes.PRUNE.recovery_steps
    (tmp_path / "candidates" / arch.name / "run.work").mkdir(parents=True)
    (tmp_path / "candidates" / arch.name / "run.work" / "config.yaml").write_text("{}\n")
    again = train.prune_config(arch, cfg, run)
    assert (again["resume"], again["overwrite"]) == (True, False)


@pytest.fixture
def tiny_prune(monkeypatch):
    """The search's prune recipe made tiny: 2 pruning steps, 2 recovery steps each."""
    from lmshrink.search import recipes

    tiny = recipes.PruneRecipe(
        steps=2,
        recovery_steps=2,
        final_recovery_steps=3,
        importance_examples=32,
        lr=1e-3,
        batch_size=16,
        speed_examples=8,
        rounds=1,
    )
    monkeypatch.setattr(recipes, "PRUNE", tiny)
    return tiny


def test_a_search_prunes_the_teacher(tiny_teacher, tiny_prune, tmp_path):
    """A pruned candidate is timed untrained, made by lmshrink prune with the search's
    recipe, exported, scored, and shown like any other."""
    from lmshrink.compress.onnx import onnx_parameters
    from lmshrink.prune import REPORT_FILE
    from lmshrink.search import train
    from lmshrink.shrink import shrink

    out = tmp_path / "search"
    state = shrink(_shrink_config(tiny_teacher, out, candidates=["pruned:keep=0.6"]))
    name = "pruned-keep0.6"
    assert state["trained"] == ["teacher", name]
    rows = {r["name"]: r for r in state["rows"]}
    assert set(rows) == {f"{a}/{b}" for a in ("teacher", name) for b in ONNX_BACKENDS}
    assert all(r["p50_ms"] > 0 and r["score"] is not None for r in rows.values())
    assert rows[f"{name}/onnx-fp32"]["family"] == "pruned"
    # timed before training, on a graph of the trained model's size, smaller than the teacher
    log = (out / "lmshrink.log").read_text()
    assert log.index(f"exported {name}") < log.index(f"training {name} (lmshrink prune")
    timed = onnx_parameters(out / "latency" / name / "onnx-fp32" / "model.onnx")
    served = onnx_parameters(out / "candidates" / name / "onnx-fp32" / "model.onnx")
    teacher = onnx_parameters(out / "latency" / "teacher" / "onnx-fp32" / "model.onnx")
    assert timed == served < teacher
    # made by prune, with the recipe the search gave it
    assert train.PRUNE_REPORT == REPORT_FILE
    run = out / "candidates" / name / "run"
    report = json.loads((run / REPORT_FILE).read_text())
    assert report["target"]["params"] == 0.6
    assert [h["recovery_steps"] for h in report["history"]] == [2, 3]
    assert report["encoder_parameters"]["pruned"] <= 0.6 * report["encoder_parameters"]["unpruned"]
    assert not (out / "candidates" / name / "run.work").exists()
    scored = state["scores"][f"{name}/onnx-int8"]
    assert scored["folder"] == str(out / "candidates" / name / "onnx-int8")
    assert name in (out / "report.md").read_text()


@pytest.mark.parametrize("backend", ["fasttext", "onnx-int8", "onnx-int8-static"])
def test_the_model_cards_serving_snippet_runs_without_lmshrink(
    finished_search, tmp_path, monkeypatch, backend
):
    """The card's snippet, run from a folder holding `best/` (here: a candidate's serving
    folder of each kind), prints the label lmshrink's own server gives."""
    import contextlib
    import io

    from lmshrink.search.latency import serve
    from lmshrink.search.report import serving_snippet

    _, state = finished_search
    row = next(r for r in state["rows"] if r["backend"] == backend and r["folder"])
    (tmp_path / "best").symlink_to(row["folder"])
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(serving_snippet(row), {})
    text = "a gripping, funny film"
    expected = serve(row["name"], tmp_path / "best", threads=1).predict([(text,)])[0]
    meta = "fasttext.json" if backend == "fasttext" else "export.json"
    names = json.loads((tmp_path / "best" / meta).read_text())["labels"]
    assert printed.getvalue().strip() == names[int(expected)]


def test_a_candidate_that_fails_is_left_out_and_the_search_goes_on(
    tiny_teacher, tmp_path, monkeypatch
):
    """A candidate whose training fails (here: a NaN stop) is reported and skipped; the
    others are trained and one of them wins; --resume tries the failed one again."""
    import lmshrink.shrink as command
    from lmshrink.errors import TrainingError

    real = command._distill

    def bilstm_fails(raw):
        if raw["student"]["kind"] == "bilstm":
            raise TrainingError("loss is NaN at step 3; lower the learning rate.")
        return real(raw)

    out = tmp_path / "search"
    monkeypatch.setattr(command, "_distill", bilstm_fails)
    state = command.shrink(_shrink_config(tiny_teacher, out))
    assert "bilstm-embedding_dim8-hidden_size8" not in state["trained"]
    assert "static-embedding_dim8" in state["trained"] and state["winner"]
    assert not state["winner"].startswith("bilstm")
    report = (out / "report.md").read_text()
    assert "bilstm-embedding_dim8-hidden_size8 failed and was left out: loss is NaN" in report
    monkeypatch.setattr(command, "_distill", real)
    again = command.shrink(_shrink_config(tiny_teacher, out, resume=True))
    assert "bilstm-embedding_dim8-hidden_size8" in again["trained"]


@pytest.mark.parametrize(
    ("spec", "asked", "cap", "used"),
    [
        ("layers:layers=2", 0, 20_000, 20_000),  # all asked: the transformer gets the cap
        ("layers:layers=2", 5_000, 20_000, 5_000),  # a smaller subset asked stays
        ("layers:layers=2", 50_000, 20_000, 20_000),
        ("layers:layers=2", 0, 0, 0),  # no cap
        ("bilstm:hidden_size=8", 0, 20_000, 0),  # a BiLSTM reads the whole transfer set
        ("static:embedding_dim=8", 50_000, 20_000, 50_000),
    ],
)
def test_only_a_transformer_student_distils_on_a_capped_unaugmented_transfer_set(
    tmp_path, spec, asked, cap, used
):
    from lmshrink.data.task_kinds import SEQUENCE_CLASSIFICATION
    from lmshrink.search.train import distill_config
    from lmshrink.shrink import ShrinkConfig

    cfg = ShrinkConfig(teacher="t", budget_ms=1.0, transformer_transfer_samples=cap)
    cfg.transfer.max_transfer_samples = asked
    cfg.transfer.augment.multiplier = 2
    raw = distill_config(
        parse_architecture(spec), cfg, SEQUENCE_CLASSIFICATION, tmp_path / "run", tmp_path
    )
    assert raw["transfer"]["max_transfer_samples"] == used
    # a capped transformer student reads no augmented copies; the others read what is asked
    capped = spec.startswith("layers") and cap > 0
    assert raw["transfer"]["augment"]["multiplier"] == (0 if capped else 2)
    assert cfg.transfer.max_transfer_samples == asked  # the search's own config is unchanged
    assert cfg.transfer.augment.multiplier == 2


def test_candidates_are_scored_one_text_at_a_time(finished_search, monkeypatch, tmp_path):
    """As a batch-1 budget serves them: dynamic int8's activation scales depend on the batch,
    so a batched dev score would not be the served one."""
    import shutil

    import lmshrink.measure.scoring as scoring
    from lmshrink.config import DataConfig, from_dict
    from lmshrink.models.sources import read_model
    from lmshrink.search import train

    out, state = finished_search
    name = "bilstm-embedding_dim8-hidden_size8/onnx-int8"
    arch_name, backend = name.split("/")
    folder = tmp_path / arch_name  # a copy without the kept score, so it is scored again
    shutil.copytree(out / "candidates" / arch_name / backend, folder / backend)
    batch_sizes = []
    original = scoring.predict_and_score

    def recording(model, tokenizer, task, splits, max_length, batch_size, progress=False):
        batch_sizes.append(batch_size)
        return original(model, tokenizer, task, splits, max_length, batch_size, progress)

    monkeypatch.setattr(scoring, "predict_and_score", recording)
    data = from_dict(DataConfig, state["config"]["data"])
    teacher = read_model(state["config"]["teacher"], data, 42)
    archs = [parse_architecture(spec) for spec in state["config"]["candidates"]]
    candidate = plan.candidate_named(archs, name)
    got = train.score(candidate, folder, teacher.task, teacher.splits, data.max_length)
    assert batch_sizes == [1]
    assert got["score"] == pytest.approx(state["scores"][name]["score"])


def test_the_report_warns_when_timing_rounds_put_the_winner_over_the_budget():
    from lmshrink.search.report import near_the_edge

    row = {"p50_ms": 0.09, "round_p50_ms": [0.08, 0.09, 0.12]}
    (line,) = near_the_edge(row, 0.1)
    assert "in 1 of 3 timing rounds" in line and "0.080-0.120 ms" in line
    assert near_the_edge(row, 0.2) == []
    assert near_the_edge({"p50_ms": 0.09}, 0.1) == []  # a search timed before rounds were kept


def test_the_terminal_summary_names_the_winner_and_warns_near_the_edge():
    from lmshrink.shrink import format_summary

    win = {"name": "static/onnx-fp32", "score": 0.8, "retention": 0.9, "p50_ms": 0.09}
    state = {"config": {"out": "runs/s", "budget_ms": 0.1}, "winner": win["name"], "rows": [win]}
    assert "Near the edge" not in format_summary(state)
    assert "best within 0.1 ms: static/onnx-fp32, dev 80.00 (90.0%" in format_summary(state)
    win["round_p50_ms"] = [0.09, 0.11]
    assert "Near the edge: in 1 of 2 timing rounds" in format_summary(state)
