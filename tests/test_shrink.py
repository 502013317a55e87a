"""`lmshrink shrink`: the grid, the plan, and a whole search on tiny models."""

from __future__ import annotations

import json

import pytest

from lmshrink.errors import ConfigError, LmshrinkError
from lmshrink.search import plan
from lmshrink.search.candidates import Architecture, architectures, parse_architecture


def test_parse_architecture_reads_family_and_settings():
    arch = parse_architecture("bilstm:embedding_dim=64,hidden_size=256")
    assert arch.family == "bilstm"
    assert dict(arch.settings) == {"embedding_dim": 64, "hidden_size": 256}
    assert arch.name == "bilstm-embedding_dim64-hidden_size256"
    assert arch.spec == "bilstm:embedding_dim=64:hidden_size=256"
    assert parse_architecture(arch.spec) == arch
    assert arch.size == 64 * 256
    assert parse_architecture("fasttext").backends == ("fasttext",)
    assert parse_architecture("static:embedding_dim=8").backends == ("onnx-fp32", "onnx-int8")


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
        for b in ("onnx-fp32", "onnx-int8")
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
    assert {"teacher/onnx-fp32", "teacher/onnx-int8"} == set(state["scores"])
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


def test_a_search_on_a_token_task_chooses_a_tagger(tmp_path, tiny_encoder):
    """NER: the students tag words; the search scores them by entity F1 and refuses the
    sentence-only families."""
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
        ["bilstm:embedding_dim=8:hidden_size=8"],
    )  # fmt: skip
    rows = {r["name"]: r for r in state["rows"]}
    assert set(rows) == {
        f"{a}/{b}" for a in ("teacher", "bilstm-embedding_dim8-hidden_size8")
        for b in ("onnx-fp32", "onnx-int8")
    }  # fmt: skip
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
        f"{a}/{b}" for a in ("teacher", "static-embedding_dim8") for b in ("onnx-fp32", "onnx-int8")
    }  # fmt: skip
    assert all(set(r["metrics"]) == {"pearson", "spearman"} for r in rows.values())
    assert state["winner"] in rows
