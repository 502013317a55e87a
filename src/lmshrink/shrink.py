"""`lmshrink shrink`: a teacher and a latency budget in, the most accurate model that fits out.

The search, in four steps (`lmshrink.search`):

1. **Latency first.** Every architecture of the grid (the teacher itself, the teacher
   pruned to a few kept shares, layer-subset transformers, BiLSTMs, static-embedding
   students, fastText) is built untrained, exported to ONNX fp32, dynamic int8 and static
   int8 and timed on this CPU end to end (raw dev strings in, labels out) at batch 1 and
   32, interleaved. Speed does not depend on weights, so what misses the budget is dropped
   in minutes, before any training.
2. **Train only what can win.** The teacher labels the transfer set once into a shared cache;
   the architectures that fit are trained in the order most likely to win (the families by
   the accuracy expected of them, the largest that fits in each first), each as an ordinary
   `lmshrink distill` run folder (a pruned teacher: an `lmshrink prune` one), bounded by
   `--per-family`, `--max-candidates` and `--time-budget`.
3. **Score** each trained architecture on dev in each backend that fits (an int8 graph by its
   own predictions).
4. **Choose** the most accurate candidate within the budget (and above `--min-retention`):
   `best/` is its serving folder (ONNX, or fastText's model.bin) with a model card;
   `report.md`, `shrink.json` and `pareto.png` show every candidate and why the winner won.

Dev data only: the choice never sees the test split. A killed search continues with
`--resume`: finished exports, timings, trainings and scores are kept in the output folder.

Output folder (`--out`): shrink.json, report.md, pareto.png, best/, latency/ (the untrained
exports that were timed), candidates/<name>/ (run/ from distill or prune, onnx-fp32/,
onnx-int8/, onnx-int8-static/ or fasttext/), cache/ (the teacher's outputs).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from lmshrink.config import DataConfig, RunSettings, option
from lmshrink.data.transfer import TransferConfig
from lmshrink.errors import ConfigError, Interrupted, LmshrinkError, RunFolderError
from lmshrink.reporting.progress import LOG_FILE, for_command, info, log_to

STATE_FILE = "shrink.json"


class NoModelFits(LmshrinkError):
    """No candidate meets the budget and the retention asked for."""


@dataclasses.dataclass
class ShrinkConfig(RunSettings):
    """`lmshrink shrink`: the most accurate model within a latency budget on this CPU."""

    teacher: str = option(
        "", "fine-tuned teacher folder (from lmshrink finetune).", positional=True
    )
    budget_ms: float = option(
        0.0,
        "latency budget: median milliseconds per sentence at batch 1, end to end (raw text in, "
        "tokenization included, label out), on this CPU with --timing-threads (required).",
    )
    min_retention: float = option(
        0.0,
        "the winner must keep at least this share of the teacher's dev score (0.98: 98%; 0: any).",
    )
    candidates: list[str] = option(
        [],
        "architectures to consider, as family or family:key=value:key=value (families: teacher, "
        "pruned, layers, bilstm, static, fasttext; empty: the default grid, see lmshrink.search."
        "candidates).",
    )
    per_family: int = option(
        1, "architectures trained per family, the largest that fits the budget first."
    )
    max_candidates: int = option(0, "train at most this many architectures in all (0: no cap).")
    time_budget: float = option(
        0.0, "minutes: start no new training after this long (0: no limit)."
    )
    timing_threads: int = option(1, "threads each served model may use when timed.", min=1)
    speed_examples: int = option(200, "dev texts per timing round.", min=1)
    rounds: int = option(3, "timing rounds (candidates take turns; the median is kept).", min=1)
    transformer_transfer_samples: int = option(
        20_000,
        "a transformer student (layers) distils on a fixed-seed subset of this many of the "
        "transfer set's texts, without augmented copies (0: the whole transfer set, as the "
        "other students read it). Initialised from the teacher's own layers, it kept 99.7% "
        "of the teacher's SST-2 accuracy on 20,000 real texts (bench/results/"
        "glue_students.md), and each example costs it far more than a BiLSTM (17.4M "
        "parameters against 1-2M): the BiLSTM and static students, which need the whole "
        "(augmented) transfer set, get it all.",
        min=0,
    )
    resume: bool = option(False, "continue the search in --out, keeping what it finished.")
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    transfer: TransferConfig = dataclasses.field(default_factory=TransferConfig)


def _check(cfg: ShrinkConfig) -> None:
    if not cfg.teacher:
        raise ConfigError("no teacher given; pass the fine-tuned teacher folder.")
    if not cfg.budget_ms > 0:
        raise ConfigError(
            "--budget-ms must be a positive number of milliseconds, e.g. --budget-ms 1."
        )
    if not 0 <= cfg.min_retention < 1.5:
        raise ConfigError(
            f"--min-retention {cfg.min_retention} is a share of the teacher's score: give it "
            "as 0.98 for 98%."
        )
    if cfg.per_family < 1:
        raise ConfigError("--per-family must be at least 1.")


def _prepare_out(cfg: ShrinkConfig) -> tuple[Path, dict[str, Any]]:
    """The output folder and the saved state of the search in it (empty for a new one)."""
    import shutil

    from lmshrink.config import to_dict
    from lmshrink.runs import check_out

    out = Path(cfg.out).expanduser() if cfg.out else Path()
    state_file = out / STATE_FILE
    from lmshrink.search.candidates import parse_architecture

    free = ("resume", "overwrite", "progress", "quiet")
    mine = {k: v for k, v in to_dict(cfg).items() if k not in free}
    # one grid, however it was spelled (bilstm:a=1,b=2 in YAML is bilstm:a=1:b=2)
    mine["candidates"] = [parse_architecture(spec).spec for spec in cfg.candidates]
    if cfg.resume:
        if not state_file.is_file():
            raise RunFolderError(f"{out}: no search to resume (no {STATE_FILE}); drop --resume.")
        state = json.loads(state_file.read_text())
        saved = state.get("config", {})
        changed = sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k))
        # the budget and the choice may change: finished timings and trainings stay valid
        changed = [k for k in changed if k not in ("budget_ms", "min_retention")]
        if changed:
            raise RunFolderError(
                f"{out}: --resume needs the search's own settings, but {', '.join(changed)} "
                f"differ from its {STATE_FILE}; drop them or start a new search."
            )
        state["config"] = mine
        return out, state
    out = check_out(cfg.out, cfg.overwrite)
    if out.exists():
        for item in out.iterdir():  # --overwrite; the teacher cache stays valid (keyed)
            if item.name != "cache":
                shutil.rmtree(item) if item.is_dir() else item.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out, {"config": mine, "latency": {}, "scores": {}, "trained": [], "notes": []}


def _save(out: Path, state: dict[str, Any]) -> None:
    from lmshrink.runs import write_text_atomic

    write_text_atomic(out / STATE_FILE, json.dumps(state, indent=2) + "\n")


@for_command
def shrink(cfg: ShrinkConfig) -> dict[str, Any]:
    """Run (or resume) the search; returns the content of shrink.json (every candidate's
    latency, score and retention, the plan, and the winner). What it prints, with what its
    distill runs print, is appended to `--out`'s lmshrink.log."""
    from lmshrink.data.splits import read_split
    from lmshrink.models.sources import read_model
    from lmshrink.runs import apply_threads
    from lmshrink.search import latency, plan, report, train

    _check(cfg)
    apply_threads(cfg.threads)
    out, state = _prepare_out(cfg)
    log_to(out / LOG_FILE)
    started = time.perf_counter()
    log = info  # on stdout unless --quiet, and in the log

    teacher = read_model(cfg.teacher, cfg.data, cfg.seed)
    task = teacher.task
    state["task"] = task.name
    archs = plan.usable_architectures(cfg.candidates, task, log, teacher.model)
    gold = read_split(task, "train", teacher.data).subset(teacher.data.max_train_samples, cfg.seed)

    log(f"step 1: timing {len(archs)} architectures untrained, end to end, on this CPU")
    folders = latency.prepare(archs, teacher, gold, out / "latency", log, cfg.seed)
    missing = [name for name in folders if name not in state["latency"]]
    if missing:
        state["latency"] = latency.time_all(
            folders, teacher.splits[0], cfg.timing_threads, cfg.speed_examples, cfg.rounds
        )
        _save(out, state)
    fitting = plan.fitting(state["latency"], cfg.budget_ms)
    log(
        f"  {len(fitting)} of {len(folders)} candidates fit in {cfg.budget_ms:g} ms: "
        + (", ".join(sorted(fitting)) or "none")
    )

    # The teacher is the reference of every retention: it is scored whatever the budget.
    order = [a for a in archs if a.family == "teacher"]
    order += plan.training_order(archs, fitting, cfg.per_family, cfg.max_candidates)
    log(
        f"step 2: training {len(order) - 1} architecture(s): "
        + (", ".join(a.name for a in order[1:]) or "none fits")
    )
    cache = out / "cache"
    labeled = gold.subset(teacher.data.num_labeled, cfg.seed)
    for arch in order:
        if arch.name in state["trained"]:
            continue
        spent = (time.perf_counter() - started) / 60
        if cfg.time_budget and spent > cfg.time_budget and arch.trained:
            note = f"time budget of {cfg.time_budget:g} min spent: {arch.name} was not trained"
            log("  " + note)
            state["notes"].append(note)
            continue
        folder = out / "candidates" / arch.name
        try:
            if arch.family == "teacher":
                folder = out / "latency" / arch.name  # the teacher is served as it is
            elif arch.family == "fasttext":
                from lmshrink.search.teacher_labels import transfer_logits

                transfer = transfer_logits(cfg, teacher, teacher.splits, cache, log)
                train.train_fasttext_student(arch, cfg, folder, transfer, labeled, task.labels, log)
            elif arch.family == "pruned":
                train.train_pruned(arch, cfg, folder, _prune, log)
            else:
                train.train_student(arch, cfg, task.kind, folder, cache, _distill, log)
            scores = {}
            for backend in arch.backends:
                name = f"{arch.name}/{backend}"
                candidate = plan.candidate_named(archs, name)
                scores[name] = train.score(
                    candidate, folder, task, teacher.splits, teacher.data.max_length
                )
                scores[name]["folder"] = str((folder / backend).resolve())
        except Interrupted:
            raise  # a kill: --resume continues this candidate
        except LmshrinkError as exc:
            if not arch.trained:
                raise  # the teacher is every retention's reference
            # One candidate that cannot be trained (a NaN loss, a failed parity check) must
            # not cost the others: the search goes on, and says so.
            note = f"{arch.name} failed and was left out: {exc} (--resume tries it again)"
            log("  " + note)
            state["notes"].append(note)
            _save(out, state)
            continue
        state["scores"].update(scores)
        state["trained"].append(arch.name)
        _save(out, state)

    log("step 3: choosing")
    rows = plan.rows(archs, state, cfg.budget_ms, cfg.min_retention)
    winner = plan.winner(rows)
    state["rows"] = rows
    state["winner"] = winner["name"] if winner else None
    if winner:
        report.write_best(winner, task, out / "best")
    report.write_report(state, rows, winner, cfg, out)
    _save(out, state)
    if winner is None:
        raise NoModelFits(plan.why_nothing_fits(rows, cfg.budget_ms, cfg.min_retention, out))
    return state


def _distill(raw: dict[str, Any]) -> Any:
    """The distill command on a config given as a dict: shrink is the one command that
    composes others (tests/test_architecture.py allows exactly this edge and the next)."""
    from lmshrink.config import from_dict
    from lmshrink.distill import DistillConfig, distill

    return distill(from_dict(DistillConfig, raw))


def _prune(raw: dict[str, Any]) -> Any:
    """The prune command on a config given as a dict (a pruned teacher's training)."""
    from lmshrink.config import from_dict
    from lmshrink.prune import PruneConfig, prune

    return prune(from_dict(PruneConfig, raw))


def format_summary(state: dict[str, Any]) -> str:
    """Terminal lines: the winner and where it is."""
    from lmshrink.search.report import near_the_edge

    rows = {r["name"]: r for r in state["rows"]}
    win = rows[state["winner"]]
    out = Path(state["config"]["out"])
    budget = state["config"]["budget_ms"]
    edge = "".join(f"\n{line}" for line in near_the_edge(win, budget))
    return (
        f"best within {budget:g} ms: {win['name']}, dev "
        f"{100 * win['score']:.2f} ({100 * win['retention']:.1f}% of the teacher), "
        f"{win['p50_ms']:.3f} ms end to end at batch 1 -> {out / 'best'}\n"
        f"every candidate: {out / 'report.md'}{edge}"
    )
