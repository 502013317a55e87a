"""What the search leaves: `best/` with its model card, `report.md` and `pareto.png`."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

CARD_FILE = "README.md"


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def serving_snippet(row: dict[str, Any]) -> str:
    """Python that serves the winner's folder without lmshrink (raw text in, label out)."""
    if row["backend"] == "fasttext":
        return (
            "import json, re\nimport fasttext\n\n"
            'meta = json.load(open("best/fasttext.json"))\n'
            'model = fasttext.load_model("best/model.bin")\n'
            'rule = meta["preprocessing"]  # the text rule the model was trained with\n'
            "def prepare(text):\n"
            '    return " ".join(re.findall(rule["token_regex"], text.lower()))\n'
            '(label,), _ = model.predict(prepare("a gripping, funny film"))\n'
            'print(meta["labels"][int(label[len(meta["label_prefix"]):])])\n'
        )
    return (
        "import json\nimport numpy as np\nimport onnxruntime as ort\n"
        "from tokenizers import Tokenizer\n\n"
        'meta = json.load(open("best/export.json"))\n'
        'tokenizer = Tokenizer.from_file("best/tokenizer.json")\n'
        'tokenizer.enable_truncation(meta["tokenizer"]["max_length"])\n'
        'session = ort.InferenceSession("best/model.onnx", providers=["CPUExecutionProvider"])\n'
        'enc = tokenizer.encode("a gripping, funny film")\n'
        'given = {"input_ids": enc.ids, "attention_mask": enc.attention_mask,\n'
        '         "token_type_ids": enc.type_ids}\n'
        "feeds = {i.name: np.array([given[i.name]], dtype=np.int64)\n"
        "         for i in session.get_inputs()}\n"
        '(logits,) = session.run(["logits"], feeds)\n'
        'print(meta["labels"][int(logits[0].argmax())])\n'
    )


# What each backend means for whoever serves it (the model card says it of the winner).
BACKEND_NOTES = {
    "onnx-fp32": "ONNX, fp32 weights: the trained model's own predictions",
    "onnx-int8": (
        "ONNX Runtime dynamic int8: activation scales are computed at each call over the "
        "whole batch, so a sentence's prediction can change with what else is in its batch "
        "(the dev score here was measured one sentence at a time)"
    ),
    "onnx-int8-static": (
        "ONNX Runtime static int8: activation scales calibrated once on training examples "
        "(export.json says which), so a sentence gets the same prediction alone or in any batch"
    ),
    "fasttext": "fastText's own model.bin, served by the fasttext package",
}


def model_card(row: dict[str, Any], task: Any) -> str:
    metrics = ", ".join(f"{k} {100 * v:.2f}" for k, v in (row["metrics"] or {}).items())
    return "\n".join(
        [
            f"# {task.name}: {row['name']} (chosen by lmshrink shrink)",
            "",
            f"- architecture: `{row['architecture']}`, served as {row['backend']}: "
            f"{BACKEND_NOTES.get(row['backend'], row['backend'])}",
            f"- dev: {metrics} ({_pct(row['retention'])} of the teacher's score)",
            f"- end-to-end latency on the machine that chose it, one sentence at a time: "
            f"p50 {_ms(row['p50_ms'])} ms, p95 {_ms(row['p95_ms'])} ms; batch 32: "
            f"{row['per_second_b32']:,.0f} sentences/s",
            "",
            "## Serving it without lmshrink",
            "",
            "```python",
            serving_snippet(row).rstrip(),
            "```",
            "",
        ]
    )


def write_best(row: dict[str, Any], task: Any, best: Path) -> None:
    """`best/`: a copy of the winner's serving folder and its model card, written whole."""
    from lmshrink.runs import staged_output

    with staged_output(best) as stage:
        shutil.copytree(row["folder"], stage, dirs_exist_ok=True)
        (stage / CARD_FILE).write_text(model_card(row, task))


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| candidate | fits | dev score | retention | e2e b=1 p50 ms | p95 ms | model-only "
        "p50 ms | b=32 /s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: r["p50_ms"]):
        score = "" if r["score"] is None else f"{100 * r['score']:.2f}"
        lines.append(
            f"| {r['name']} | {'yes' if r['fits_budget'] else 'no'} | {score or 'not trained'} "
            f"| {_pct(r['retention'])} | {_ms(r['p50_ms'])} | {_ms(r['p95_ms'])} | "
            f"{_ms(r.get('model_p50_ms'))} | {r['per_second_b32']:,.0f} |"
        )
    return lines


def why(winner: dict[str, Any] | None, rows: list[dict[str, Any]], cfg: Any) -> list[str]:
    """The reasons, in words: the budget, what fit, what was trained, what beat what."""
    fits = [r for r in rows if r["fits_budget"]]
    scored = [r for r in fits if r["score"] is not None]
    lines = [
        f"Budget: {cfg.budget_ms:g} ms per sentence at batch 1, end to end, "
        f"{cfg.timing_threads} thread(s); {len(fits)} of {len(rows)} candidates fit. "
        f"Minimum retention: {_pct(cfg.min_retention) if cfg.min_retention else 'none'}."
    ]
    if winner is None:
        lines.append("No candidate met both; see the table.")
        return lines
    others = sorted((r for r in scored if r["name"] != winner["name"]), key=lambda r: -r["score"])
    lines.append(
        f"Winner: **{winner['name']}**, dev {100 * winner['score']:.2f} "
        f"({_pct(winner['retention'])} of the teacher) at {_ms(winner['p50_ms'])} ms."
    )
    lines += near_the_edge(winner, cfg.budget_ms)
    if others:
        runner = others[0]
        lines.append(
            f"Runner-up within the budget: {runner['name']}, {100 * runner['score']:.2f} at "
            f"{_ms(runner['p50_ms'])} ms."
        )
    faster_untrained = [r for r in fits if r["score"] is None]
    if faster_untrained:
        lines.append(
            "Fit but not trained (smaller members of a family whose larger member was "
            "trained, or cut by --per-family / --max-candidates / --time-budget): "
            + ", ".join(r["name"] for r in faster_untrained)
            + "."
        )
    return lines


def near_the_edge(row: dict[str, Any], budget_ms: float) -> list[str]:
    """A warning when some timing rounds put `row` over the budget: its p50 over every call
    fits, but on a machine whose speed moves (a shared or throttled CPU), serving it may not."""
    rounds = row.get("round_p50_ms") or []  # absent in searches timed before it was kept
    over = [ms for ms in rounds if ms > budget_ms]
    if not over:
        return []
    return [
        f"Near the edge: in {len(over)} of {len(rounds)} timing rounds its p50 was over "
        f"{budget_ms:g} ms (rounds: {min(rounds):.3f}-{max(rounds):.3f} ms); this machine's "
        "speed moved while it was timed. Time it again where it will serve (`lmshrink bench "
        "--end-to-end`), or give the budget some room."
    ]


def write_report(
    state: dict[str, Any], rows: list[dict[str, Any]], winner: Any, cfg: Any, out: Path
) -> None:
    """report.md (why the winner won, every candidate) and pareto.png when matplotlib is
    installed."""
    from lmshrink.errors import MissingDependencyError
    from lmshrink.reporting.plot import plot_pareto
    from lmshrink.runs import write_text_atomic

    task = state.get("task", "")
    lines = [f"# lmshrink shrink {task}".rstrip(), "", *why(winner, rows, cfg), ""]
    plotted = [
        {
            "task": task or "task",
            "score": r["score"],
            "latency_ms": {"p50": r["p50_ms"]},
            "speed": None,
            "role": r["family"],
            "backend": r["backend"],
            "label": r["name"],
            "reference": r["name"] == "teacher/onnx-fp32",
        }
        for r in rows
        if r["score"] is not None
    ]
    try:
        if plotted:
            plot_pareto(plotted, out / "pareto.png", budget_ms=cfg.budget_ms)
            lines += ["![dev score against end-to-end latency](pareto.png)", ""]
    except MissingDependencyError as exc:
        lines += [f"(no plot: {exc})", ""]
    lines += table(rows)
    lines += [""] + [f"- {note}" for note in state.get("notes", [])]
    write_text_atomic(out / "report.md", "\n".join(lines).rstrip() + "\n")
