"""Model cards: a README.md in each model folder of a report, saying what the model is, how
it was made, its numbers, and how to load it. A README that lmshrink did not write is kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmshrink.reporting.rows import read_json
from lmshrink.reporting.run_report import GOLD_ONLY
from lmshrink.reporting.text import human_size, metric_label

CARD_MARKER = "<!-- model card written by lmshrink report; it is rewritten on each report -->"
# The sentence a token model's card tags: pre-split words, as NER models read them.
EXAMPLE_WORDS = ["Angela", "Merkel", "met", "the", "board", "of", "Siemens", "in", "Munich", "."]


def is_token_row(row: dict[str, Any]) -> bool:
    """Whether a row's model tags words (an NER task) rather than classifying sentences."""
    from lmshrink.data.ner import is_ner_task

    return bool(row["task"]) and is_ner_task(row["task"])


def loading_snippet(row: dict[str, Any]) -> str:
    """Python code that loads the row's model and classifies a sentence (a token model:
    tags each word of a sentence given as words)."""
    if is_token_row(row):
        return token_loading_snippet(row)
    folder = row["path"]
    if row["backend"].startswith("onnx"):
        return (
            "import numpy as np\nimport onnxruntime as ort\n"
            "from transformers import AutoTokenizer\n\n"
            f'folder = "{folder}"\n'
            'session = ort.InferenceSession(f"{folder}/model.onnx", '
            'providers=["CPUExecutionProvider"])\n'
            "tokenizer = AutoTokenizer.from_pretrained(folder)\n"
            'enc = tokenizer(["a gripping, funny film"], return_tensors="np")\n'
            "feeds = {i.name: enc[i.name].astype(np.int64) for i in session.get_inputs()}\n"
            '(logits,) = session.run(["logits"], feeds)  # [batch, labels]\n'
        )
    config = (
        read_json(Path(folder) / "config.json") if (Path(folder) / "config.json").is_file() else {}
    )
    needs_lmshrink = not _stock_model_type(config.get("model_type", ""))
    lines = [
        "import torch",
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
    ]
    if row["backend"] == "torch-int8":
        lines.append("from lmshrink.quantize import load_quantized  # int8 weights made on load")
    elif needs_lmshrink:
        lines.append(
            f"import lmshrink  # registers the {config.get('model_type')} model class with the "
            "Auto API"
        )
    load = (
        "load_quantized(folder)"
        if row["backend"] == "torch-int8"
        else "AutoModelForSequenceClassification.from_pretrained(folder).eval()"
    )
    lines += [
        "",
        f'folder = "{folder}"',
        f"model = {load}",
        "tokenizer = AutoTokenizer.from_pretrained(folder)",
        'batch = tokenizer(["a gripping, funny film"], return_tensors="pt")',
        "with torch.inference_mode():",
        "    label_id = model(**batch).logits.argmax(-1).item()",
        "print(model.config.id2label[label_id])",
    ]
    return "\n".join(lines) + "\n"


def token_loading_snippet(row: dict[str, Any]) -> str:
    """Python code that loads the row's token model and prints each word's IOB2 tag, read at
    the word's first sub-token (the README's serving example starts from raw text)."""
    folder = row["path"]
    lines: list[str]
    shapes: list[str] = []  # the lines that add word_shape_ids, for a model that reads them
    if row["backend"].startswith("onnx"):
        export = Path(folder) / "export.json"
        if export.is_file() and "word_shape_ids" in read_json(export).get("inputs", []):
            shapes = [
                "# this model also reads how each word is written: word_shapes.py, beside it",
                'spec = importlib.util.spec_from_file_location("word_shapes", '
                'f"{folder}/word_shapes.py")',
                "rule = importlib.util.module_from_spec(spec)",
                "spec.loader.exec_module(rule)",
                "of_word = rule.word_shape_ids(words)",
                'feeds["word_shape_ids"] = np.array('
                "[[0 if w is None else of_word[w] for w in batch.word_ids(0)]])",
            ]
        lines = [
            *(["import importlib.util"] if shapes else []),
            "import json",
            "",
            "import numpy as np",
            "import onnxruntime as ort",
            "from transformers import AutoTokenizer",
            "",
            f'folder = "{folder}"',
            'session = ort.InferenceSession(f"{folder}/model.onnx", '
            'providers=["CPUExecutionProvider"])',
            "tokenizer = AutoTokenizer.from_pretrained(folder)",
            'with open(f"{folder}/export.json") as f:',
            '    labels = json.load(f)["labels"]  # IOB2 tags in id order',
            f"words = {EXAMPLE_WORDS!r}",
            'batch = tokenizer([words], is_split_into_words=True, return_tensors="np")',
            "names = [i.name for i in session.get_inputs()]",
            "feeds = {n: batch[n].astype(np.int64) for n in names if n in batch}",
            *shapes,
            '(logits,) = session.run(["logits"], feeds)  # [batch, sequence, labels]',
            "tag_ids = logits[0].argmax(-1).tolist()",
            "id2label = dict(enumerate(labels))",
        ]
    else:
        config = (
            read_json(Path(folder) / "config.json")
            if (Path(folder) / "config.json").is_file()
            else {}
        )
        lines = [
            "import torch",
            "from transformers import AutoModelForTokenClassification, AutoTokenizer",
        ]
        if config.get("shape_dim", 0) > 0:  # a BiLSTM tagger that reads word shapes
            lines.append("from lmshrink.data.word_shapes import word_shape_ids")
            shapes = [
                "of_word = word_shape_ids(words)  # this model also reads how words are written",
                'batch["word_shape_ids"] = torch.tensor('
                "[[0 if w is None else of_word[w] for w in batch.word_ids(0)]])",
            ]
        if row["backend"] == "torch-int8":
            lines.append(
                "from lmshrink.quantize import load_quantized  # int8 weights made on load"
            )
        elif not _stock_model_type(config.get("model_type", "")):
            lines.append(
                f"import lmshrink  # registers the {config.get('model_type')} model class with "
                "the Auto API"
            )
        load = (
            "load_quantized(folder)"
            if row["backend"] == "torch-int8"
            else "AutoModelForTokenClassification.from_pretrained(folder).eval()"
        )
        lines += [
            "",
            f'folder = "{folder}"',
            f"model = {load}",
            "tokenizer = AutoTokenizer.from_pretrained(folder)",
            f"words = {EXAMPLE_WORDS!r}",
            'batch = tokenizer([words], is_split_into_words=True, return_tensors="pt")',
            *shapes,
            "with torch.inference_mode():",
            "    tag_ids = model(**batch).logits[0].argmax(-1).tolist()  # one per sub-token",
            "id2label = model.config.id2label",
        ]
    lines += [
        "word_ids = batch.word_ids(0)",
        "firsts = [p for p, w in enumerate(word_ids) if w is not None and "
        "(p == 0 or word_ids[p - 1] != w)]",
        "for word, p in zip(words, firsts):  # each word's tag: at its first sub-token",
        '    print(f"{word}\t{id2label[tag_ids[p]]}")',
    ]
    return "\n".join(lines) + "\n"


def _stock_model_type(model_type: str) -> bool:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return model_type in CONFIG_MAPPING_NAMES


def how_made(row: dict[str, Any], by_path: dict[str, dict[str, Any]]) -> list[str]:
    """Bullet lines: method, teacher, data, stages (from the run's report and metadata)."""
    from lmshrink.models.loading import read_metadata

    meta = read_metadata(row["path"])
    config = meta.get("config", {})
    data = config.get("data", {})
    data_line = (
        f"- Data: task {row['task']}"
        + (f" from `{data['data_dir']}`" if data.get("data_dir") else "")
        + (f", max length {data['max_length']}" if data.get("max_length") else "")
        + "."
    )
    if row["role"] == "teacher":
        train = config.get("train", {})
        return [
            f"- Method: fine-tuned from `{meta.get('base_model', '?')}` with lmshrink finetune "
            f"({meta.get('train_examples', '?')} training examples, best dev at epoch "
            f"{meta.get('best_epoch', '?')} of {train.get('epochs', '?')}, lr "
            f"{train.get('lr', '?')}, batch {train.get('batch_size', '?')}).",
            data_line,
        ]
    if row["role"] == "variant":
        how = "ONNX export" if row["backend"].startswith("onnx") else "PyTorch model"
        export = Path(row["path"]) / "export.json"
        exported = json.loads(export.read_text()) if export.is_file() else {}
        source = exported.get("source")
        mode = exported.get("int8", {}).get("mode", "dynamic")  # static: calibrated scales
        int8 = f"{mode} int8 quantization of the " if row["backend"].endswith("int8") else ""
        of = f"`{source}`" if source else f"an lmshrink {meta.get('kind', 'model')}"
        return [f"- Method: {int8}{how} of {of}.", data_line]
    gold_only = row.get("method") == GOLD_ONLY
    teacher_name = f" ({by_path[row['teacher']]['label']})" if row["teacher"] in by_path else ""
    lines = [
        (
            f"- Method: trained on gold labels only with lmshrink distill ({row['kind']}); no "
            "teacher outputs were used."
            if gold_only
            else f"- Method: distilled with lmshrink distill ({row['kind']})."
        ),
        (
            f"- Compared with: `{row['teacher']}`{teacher_name}, the teacher of its run."
            if gold_only
            else f"- Teacher: `{row['teacher']}`{teacher_name}."
        ),
        data_line,
    ]
    if row["run"]:
        report = read_json(Path(row["run"]) / "report.json")
        counts = report.get("transfer_set", {})
        lines.append(
            f"- Gold-labelled rows: {report.get('labeled_examples', 0):,}; no transfer set."
            if gold_only
            else f"- Transfer set: {counts.get('total', 0):,} examples labelled by the teacher; "
            f"gold-labelled rows: {report.get('labeled_examples', 0):,}."
        )
        for stage in report.get("stages", []):
            losses = ", ".join(loss["name"] for loss in stage["losses"])
            lines.append(f"- Stage {stage['name']}: {stage['data']} data, losses {losses}.")
    return lines


def model_card(row: dict[str, Any], by_path: dict[str, dict[str, Any]]) -> str:
    """README.md of a model folder: what it is, how it was made, its numbers, how to load."""
    what = {"teacher": "teacher", "variant": f"{row['backend']} model"}.get(row["role"], "student")
    numbers = [f"| dev {metric_label(k)} | {100 * v:.2f} |" for k, v in row["metrics"].items()]
    if row["retention"] is not None:
        numbers.append(f"| retention (score / teacher's) | {100 * row['retention']:.1f}% |")
    if row["parameters"] is not None:
        numbers.append(f"| parameters | {row['parameters']:,} |")
    if row["size_bytes"] is not None:
        numbers.append(f"| size of weights | {human_size(row['size_bytes'])} |")
    if row["latency_ms"]:
        numbers.append(
            f"| batch-1 latency p50 / p95 | {row['latency_ms']['p50']:.2f} / "
            f"{row['latency_ms']['p95']:.2f} ms |"
        )
    speed = row["speed"] or {}
    if speed.get("latency_p50"):
        numbers.append(
            f"| batch-1 latency speedup vs {speed['vs']} | {speed['latency_p50']:.2f}x |"
        )
    for bs, ratio in speed.get("per_second", {}).items():
        numbers.append(f"| CPU throughput vs {speed['vs']}, batch {bs} | {ratio:.2f}x |")
    return "\n".join(
        [
            CARD_MARKER,
            f"# {row['label']}: {row['task']} {what} ({row['kind']})",
            "",
            f"A {row['task']} {_made(row)} made with lmshrink: the {what} of this comparison.",
            "",
            "## How it was made",
            "",
            *how_made(row, by_path),
            "",
            "## Numbers",
            "",
            "| | |",
            "|---|---|",
            *numbers,
            "",
            "## How to load it",
            "",
            "```python",
            loading_snippet(row).rstrip("\n"),
            "```",
            "",
        ]
    )


def _made(row: dict[str, Any]) -> str:
    return "named-entity tagger (one IOB2 tag per word)" if is_token_row(row) else "text classifier"


def write_cards(rows: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """A model card in each row's folder (atomically); a README.md that lmshrink did not
    write is kept. Returns (written, kept) paths."""
    from lmshrink.runs import write_text_atomic

    by_path = {r["path"]: r for r in rows}
    written, kept = [], []
    for row in rows:
        folder = Path(row["path"])
        if not folder.is_dir():
            continue
        card = folder / "README.md"
        if card.is_file() and not card.read_text().startswith(CARD_MARKER):
            kept.append(str(card))
            continue
        write_text_atomic(card, model_card(row, by_path))
        written.append(str(card))
    return written, kept
