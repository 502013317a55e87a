"""README's quick start, run as written, timed: does a newcomer finish in about 15 minutes?

    python bench/quickstart.py

Runs the two commands of README's "Quick start" (a teacher fine-tuned on 4,000 SST-2
sentences, then `lmshrink shrink` at 0.5 ms) in a fresh folder under
$LMSHRINK_BENCH_RUNS/quickstart, with the threads the machine has, and records the wall time
of each and the search's answer in bench/results/quickstart.{json,md}. The commands are read
from README.md itself (the fenced block after the "Quick start" heading), so the README and
this measurement cannot drift apart. Run it alone on the machine: its times are the point.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sys
import time

from common import ROOT, run_logged, runs_dir, today, write_results

from lmshrink.measure.machine import machine_info

HEADING = "## Quick start"


def readme_commands() -> list[str]:
    """The shell commands of the first fenced block after the quick-start heading, with
    continuation lines joined."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(HEADING) :]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    if block is None:
        raise SystemExit("error: README.md has no bash block after its quick-start heading")
    joined = block.group(1).replace("\\\n", " ")
    return [" ".join(line.split()) for line in joined.splitlines() if line.strip()]


def main() -> int:
    work = runs_dir() / "quickstart"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    glue = ROOT.parent / "shared" / "data" / "glue"
    steps = []
    log = work / "log.txt"
    for command in readme_commands():
        # README paths are relative to a checkout beside ../shared; run them from the checkout
        args = shlex.split(command.replace("../shared/data/glue", str(glue)))
        if args[0] == "lmshrink":
            args = [sys.executable, "-m", "lmshrink", *args[1:]]
        start = time.perf_counter()
        status = run_logged(args, log, cwd=work)
        seconds = time.perf_counter() - start
        steps.append({"command": command, "seconds": round(seconds), "status": status})
        print(f"[quickstart] {seconds / 60:.1f} min, exit {status}: {command}", flush=True)
        if status != 0:
            break
    search = work / "runs" / "quick-shrink" / "shrink.json"
    state = json.loads(search.read_text()) if search.is_file() else {}
    rows = {r["name"]: r for r in state.get("rows", [])}
    winner = rows.get(state.get("winner") or "")
    total = sum(s["seconds"] for s in steps)
    machine = machine_info()
    payload = {
        "date": today(),
        "machine": machine,
        "steps": steps,
        "total_seconds": total,
        "winner": winner,
        "teacher": rows.get("teacher/onnx-fp32"),
    }
    lines = [
        "# README's quick start, timed (bench/quickstart.py)",
        "",
        f"The commands of README's quick start, run as written in a fresh folder on "
        f"{machine.get('cpu', machine)} ({machine.get('cores')} cores), alone on the "
        f"machine. Date: {today()}.",
        "",
        "| step | wall time | exit status |",
        "|---|---|---|",
        *(
            f"| `{s['command'].split(' --')[0]}` | {s['seconds'] / 60:.1f} min | {s['status']} |"
            for s in steps
        ),
        f"| total | {total / 60:.1f} min | |",
        "",
    ]
    if winner:
        teacher = payload["teacher"]
        lines.append(
            f"The search chose {winner['name']}: dev accuracy {100 * winner['score']:.2f} "
            f"({100 * winner['retention']:.1f}% of the teacher's {100 * teacher['score']:.2f}), "
            f"{winner['p50_ms']:.3f} ms per sentence end to end at batch 1."
        )
    write_results("quickstart", payload, "\n".join(lines) + "\n")
    return 0 if steps and all(s["status"] == 0 for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
