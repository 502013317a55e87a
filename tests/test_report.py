"""`lmshrink report`: runs gathered into one table, a Pareto plot and model cards."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from lmshrink.cli import main
from lmshrink.reporting.cards import CARD_MARKER
from lmshrink.reporting.plot import pareto_front

PNG_HEADER = b"\x89PNG\r\n\x1a\n"


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def bench_json(distilled_run, tmp_path_factory) -> tuple[Path, Path]:
    """(bench result file, ONNX folder): teacher, student and the student's ONNX export."""
    pytest.importorskip("onnxruntime")
    from lmshrink.bench import BenchConfig, bench
    from lmshrink.config import DataConfig
    from lmshrink.export import ExportConfig, export

    root = tmp_path_factory.mktemp("gather")
    data = DataConfig(data_dir=str(distilled_run["glue"]), max_length=32)
    export(ExportConfig(model=str(distilled_run["run"]), out=str(root / "onnx"), data=data))
    models = [str(distilled_run["teacher"]), str(distilled_run["run"]), str(root / "onnx")]
    cfg = BenchConfig(
        models=models, json=str(root / "bench.json"), speed_examples=12, rounds=2, data=data
    )
    bench(cfg)
    return root / "bench.json", root / "onnx"


def table_row(markdown: str, label: str) -> list[str]:
    """The cells of the table row whose model column is `label`."""
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) > 2 and cells[1] == label:
            return cells
    raise AssertionError(f"no row {label!r} in:\n{markdown}")


def test_report_with_bench_table_plot_and_cards(distilled_run, bench_json, tmp_path, capsys):
    bench_file, onnx = bench_json
    teacher, run_dir = distilled_run["teacher"], distilled_run["run"]
    out = tmp_path / "report"
    code, stdout, err = run(
        ["report", teacher, run_dir, "--bench", bench_file, "--out", out], capsys
    )
    assert code == 0, err
    report = json.loads((run_dir / "report.json").read_text())
    timed = {m["kind"] + m["path"]: m for m in json.loads(bench_file.read_text())["models"]}
    student = timed["torch-fp32" + str((run_dir / "model").resolve())]
    t = timed["torch-fp32" + str(teacher.resolve())]
    md = (out / "report.md").read_text()
    row = table_row(md, run_dir.name)
    assert row[0] == "sst2" and row[2] == "student-bilstm"
    assert row[3] == f"accuracy {100 * report['dev']['student']['accuracy']:.2f}"
    assert row[4] == f"{100 * report['retention']:.1f}%"
    assert row[5] == f"{report['parameters']['student'] / 1e3:.1f}K"
    assert row[7] == f"{student['latency_ms']['p50']:.2f}"
    assert row[8] == f"{t['latency_ms']['p50'] / student['latency_ms']['p50']:.2f}x"
    assert row[9] == f"{student['per_second']['32'] / t['per_second']['32']:.2f}x"
    assert row[10] == teacher.name
    assert table_row(md, teacher.name)[2] == "teacher"
    assert table_row(md, f"{onnx.parent.name}/onnx")[2] == "onnx-fp32"
    assert "![dev score against speed](pareto.png)" in md
    assert table_row(stdout, run_dir.name) == row  # the table is printed too
    rows = json.loads((out / "report.json").read_text())["rows"]
    assert [r["role"] for r in rows] == ["teacher", "student", "variant"]
    png = (out / "pareto.png").read_bytes()
    assert png.startswith(PNG_HEADER) and len(png) > 1000
    # Model cards: what it is, how it was made, the numbers, a loading snippet that runs.
    card = (run_dir / "model" / "README.md").read_text()
    assert card.startswith(CARD_MARKER)
    assert "distilled with lmshrink distill" in card and "Stage representation" in card
    assert "import lmshrink" in card and "AutoModelForSequenceClassification" in card
    assert f"| parameters | {report['parameters']['student']:,} |" in card
    teacher_card = (teacher / "README.md").read_text()
    assert "fine-tuned from" in teacher_card and "import lmshrink" not in teacher_card
    assert "onnxruntime" in (onnx / "README.md").read_text()
    snippet = card.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(snippet, "card", "exec"), {})
    printed = capsys.readouterr().out.strip()
    assert printed == student_label(run_dir / "model", "a gripping, funny film")


def student_label(folder: Path, text: str) -> str:
    """The label lmshrink's own loading predicts for `text` (what the card's snippet prints)."""
    import torch

    from lmshrink.data.tasks import get_task
    from lmshrink.models.loading import load_for_eval

    tokenizer, model = load_for_eval(str(folder), get_task("sst2"))
    with torch.inference_mode():
        logits = model(**tokenizer([text], return_tensors="pt")).logits
    return model.config.id2label[int(logits.argmax(-1))]


def test_report_without_bench_uses_the_runs_own_speed(distilled_run, tmp_path, capsys):
    run_dir = distilled_run["run"]
    out = tmp_path / "report"
    code, _, err = run(["report", run_dir, "--out", out, "--no-cards"], capsys)
    assert code == 0, err
    report = json.loads((run_dir / "report.json").read_text())
    md = (out / "report.md").read_text()
    row = table_row(md, run_dir.name)
    assert row[7] == "n/a"  # no latency without a bench
    assert row[8] == f"{report['speed']['ratio']['student']['1']:.2f}x"
    teacher = table_row(md, distilled_run["teacher"].name)  # from the run's report
    assert teacher[3] == f"accuracy {100 * report['dev']['teacher']['accuracy']:.2f}"
    assert (out / "pareto.png").read_bytes().startswith(PNG_HEADER)
    code, _, err = run(["report", run_dir, "--out", out, "--no-cards"], capsys)
    assert code == 2 and "already holds another run" in err


def test_missing_matplotlib_names_the_install_and_keeps_the_table(
    distilled_run, tmp_path, capsys, monkeypatch
):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    out = tmp_path / "report"
    code, _, err = run(["report", distilled_run["run"], "--out", out, "--no-cards"], capsys)
    assert code == 2
    assert err.startswith("error: ") and "pip install 'lmshrink[plot]'" in err
    assert distilled_run["run"].name in (out / "report.md").read_text()
    assert not (out / "pareto.png").exists()


def test_a_readme_lmshrink_did_not_write_is_kept(distilled_run, tmp_path, capsys):
    import shutil

    teacher = tmp_path / "teacher"
    shutil.copytree(distilled_run["teacher"], teacher)
    (teacher / "README.md").write_text("my own notes\n")
    code, out, err = run(["report", teacher, "--out", tmp_path / "r"], capsys)
    assert code == 0, err
    assert (teacher / "README.md").read_text() == "my own notes\n"
    assert "kept (not written by lmshrink)" in out


def test_a_run_whose_teacher_folder_moved_joins_the_teacher_given(distilled_run, tmp_path, capsys):
    """A run folder copied elsewhere whose report names a teacher path that no longer
    exists: the teacher given by its own folder (same task and dev score) takes its place."""
    import shutil

    run_dir = tmp_path / "moved-run"
    shutil.copytree(distilled_run["run"], run_dir)
    report = json.loads((run_dir / "report.json").read_text())
    report["teacher"] = str(tmp_path / "old-place" / "teacher")
    (run_dir / "report.json").write_text(json.dumps(report))
    argv = ["report", distilled_run["teacher"], run_dir, "--out", tmp_path / "r", "--no-cards"]
    code, _, err = run(argv, capsys)
    assert code == 0, err
    rows = json.loads((tmp_path / "r" / "report.json").read_text())["rows"]
    assert [r["role"] for r in rows] == ["teacher", "student"]
    assert rows[1]["teacher"] == rows[0]["path"]
    assert rows[1]["speed"]["vs"] == distilled_run["teacher"].name
    # Without the teacher's own folder, the report's copy of it stays.
    code, _, err = run(["report", run_dir, "--out", tmp_path / "r2", "--no-cards"], capsys)
    assert code == 0, err
    rows = json.loads((tmp_path / "r2" / "report.json").read_text())["rows"]
    assert [r["role"] for r in rows] == ["student", "teacher"]


def test_report_refuses_folders_it_cannot_read(distilled_run, bench_json, tmp_path, capsys):
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("x")
    cases = [
        (tmp_path / "missing", "folder does not exist"),
        (stray, "neither a distill run folder (report.json) nor a model folder"),
        (bench_json[1], "is an ONNX or int8 folder"),
        (bench_json[0], "is a file, not a run folder; pass bench results with --bench"),
    ]
    for folder, expected in cases:
        code, out, err = run(["report", folder, "--out", tmp_path / "r"], capsys)
        assert code == 2, folder
        assert err.startswith(f"error: {folder}: ") and expected in err, err
        assert "Traceback" not in err
    assert not (tmp_path / "r").exists()
    not_bench = tmp_path / "x.json"
    not_bench.write_text("{}")
    argv = ["report", distilled_run["run"], "--bench", not_bench, "--out", tmp_path / "r"]
    code, _, err = run(argv, capsys)
    assert code == 2 and "not a result of lmshrink bench" in err


def test_pareto_front_keeps_the_points_nothing_beats():
    points = [(1.0, 90.0), (2.0, 95.0), (3.0, 93.0), (0.5, 80.0), (1.5, 85.0)]
    assert pareto_front(points, lower_is_better=True) == [3, 0, 1]
    assert pareto_front(points, lower_is_better=False) == [2, 1]


def test_gold_only_runs_say_so_and_distilled_runs_say_distilled(
    distilled_run, tiny_teacher, tmp_path, capsys
):
    """A run whose every stage trains on gold labels used no teacher output: report.json,
    report.md, the model card and the table say "gold labels only", not "distilled"."""
    from lmshrink.config import from_dict
    from lmshrink.distill import DistillConfig, distill

    raw = {
        "teacher": str(tiny_teacher["teacher"]),
        "out": str(tmp_path / "gold"),
        "progress": False,
        "data": {"task": "sst2", "data_dir": str(tiny_teacher["glue"]), "max_length": 32},
        "transfer": {"files": [str(tiny_teacher["transfer"])], "min_words": 1},
        "student": {"embedding_dim": 16, "hidden_size": 16},
        "stages": [{"name": "gold", "data": "labeled", "losses": [{"name": "gold_ce"}]}],
    }
    raw["stages"][0].update(epochs=1, lr=5e-3, batch_size=32)
    gold = distill(from_dict(DistillConfig, raw))
    assert gold["method"] == "gold labels only"
    md = (tmp_path / "gold" / "report.md").read_text()
    assert "student trained on gold labels only (no teacher outputs)" in md
    assert "distilled" not in md and "Teacher outputs: none used" in md
    meta = json.loads((tmp_path / "gold" / "model" / "lmshrink.json").read_text())
    assert meta["method"] == "gold labels only"

    distilled = json.loads((distilled_run["run"] / "report.json").read_text())
    assert distilled["method"] == "distilled" and distilled["split"] == "dev"
    assert "student distilled from" in (distilled_run["run"] / "report.md").read_text()

    code, _, err = run(["report", tmp_path / "gold", "--out", tmp_path / "r"], capsys)
    assert code == 0, err
    card = (tmp_path / "gold" / "model" / "README.md").read_text()
    assert "trained on gold labels only with lmshrink distill" in card
    assert "distilled" not in card and "labelled by the teacher" not in card
    row = table_row((tmp_path / "r" / "report.md").read_text(), "gold")
    assert row[2] == "student-bilstm (gold labels only)"
    rows = json.loads((tmp_path / "r" / "report.json").read_text())["rows"]
    assert rows[0]["method"] == "gold labels only"


def test_an_older_report_without_a_method_gets_it_from_its_stages(distilled_run, tmp_path):
    import shutil

    from lmshrink.reporting.rows import rows_from_run
    from lmshrink.reporting.run_report import markdown

    run_dir = tmp_path / "old"
    shutil.copytree(distilled_run["run"], run_dir)
    report = json.loads((run_dir / "report.json").read_text())
    del report["method"]
    for stage in report["stages"]:
        stage["data"] = "labeled"
    (run_dir / "report.json").write_text(json.dumps(report))
    assert rows_from_run(run_dir)[0]["method"] == "gold labels only"
    assert "trained on gold labels only" in markdown(report)
