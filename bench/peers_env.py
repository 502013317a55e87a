"""The virtual environment of the peers that bench/shrink.py compares lmshrink with.

The peers (fastText, Model2Vec) are not lmshrink dependencies and cannot share its
environment: Model2Vec's `distill` extra pins transformers<5.4, while lmshrink's venv runs a
newer 5.x (lmshrink's own model classes do not register under 5.3). So they get a venv of
their own, made here once and reused:

    from peers_env import ensure_peers_env
    python = ensure_peers_env(runs_dir() / "peers-venv")  # .../bin/python
    subprocess.run([python, "bench/shrink_peers.py", ...])

What it installs, in this order (each a separate `pip install`, its output in ROOT/logs/):
torch==2.13.0 (the local CPU build; any other torch requirement fetches GBs of CUDA
packages); model2vec[distill,train,quantization] (model2vec 0.10's distill module imports
scikit-learn, which only the quantization extra brings); fasttext-numpy2-wheel
(fasttext-wheel 0.9.2 fails at predict under numpy 2); onnxruntime; tokenizers; and lmshrink
itself from this checkout, editable and with --no-deps, so that the peers process can import
`lmshrink.measure.end_to_end` (numpy, tokenizers and onnxruntime only) and time lmshrink's
ONNX folders in the same process as the peers. A pip constraint file keeps every step from
moving torch off 2.13.0. The marker file is written only after every step succeeded, so an
interrupted setup resumes (pip skips what is already there) and a finished one is reused.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TORCH = "torch==2.13.0"
# (what the step is called, pip arguments), installed in this order.
STEPS: list[tuple[str, list[str]]] = [
    ("torch", [TORCH]),
    ("model2vec", ["model2vec[distill,train,quantization]"]),
    ("fasttext", ["fasttext-numpy2-wheel"]),
    ("onnxruntime", ["onnxruntime"]),
    ("tokenizers", ["tokenizers"]),
    ("lmshrink", ["--no-deps", "-e", str(ROOT)]),
]
MARKER = "peers-env.json"
CONSTRAINTS = "constraints.txt"
# Key in peers_versions -> the distribution whose version it reports.
DISTRIBUTIONS = {
    "model2vec": "model2vec",
    "transformers": "transformers",
    "fasttext": "fasttext-numpy2-wheel",
    "onnxruntime": "onnxruntime",
    "torch": "torch",
    "tokenizers": "tokenizers",
    "numpy": "numpy",
}


def venv_python(root: Path) -> Path:
    return root / "bin" / "python"


def ensure_peers_env(root: Path) -> Path:
    """The python executable of the peers venv at `root`, made and filled first if it is not
    complete yet (see the module docstring). A failed step raises SystemExit with one line
    naming the package and its log."""
    root = Path(root).expanduser().resolve()
    python = venv_python(root)
    marker = root / MARKER
    if marker.is_file() and python.is_file():
        done = json.loads(marker.read_text())
        if done.get("steps") == [args for _, args in STEPS]:
            return python
    if not python.is_file():
        print(f"[peers-env] creating the venv {root}", flush=True)
        root.parent.mkdir(parents=True, exist_ok=True)
        made = subprocess.run(
            [sys.executable, "-m", "venv", str(root)], capture_output=True, text=True
        )
        if made.returncode != 0 or not python.is_file():
            last = (made.stderr.strip().splitlines() or ["no output"])[-1]
            raise SystemExit(f"error: python -m venv {root} failed: {last}")
    marker.unlink(missing_ok=True)
    constraints = root / CONSTRAINTS
    constraints.write_text(f"# keeps every install on the local CPU build of torch\n{TORCH}\n")
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    for name, args in STEPS:
        log = logs / f"install-{name}.log"
        print(f"[peers-env] pip install {' '.join(args)}", end="", flush=True)
        start = time.perf_counter()
        with log.open("w") as out:
            result = subprocess.run(
                [str(python), "-m", "pip", "install", "-c", str(constraints), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        if result.returncode != 0:
            print(flush=True)
            raise SystemExit(
                f"error: installing {name} into the peers venv {root} failed "
                f"(pip exit status {result.returncode}); see {log}."
            )
        print(f" ({time.perf_counter() - start:.0f} s)", flush=True)
    versions = peers_versions(python)
    print("[peers-env] installed " + ", ".join(f"{k} {v}" for k, v in versions.items()), flush=True)
    marker.write_text(
        json.dumps({"steps": [args for _, args in STEPS], "versions": versions}, indent=2) + "\n"
    )
    return python


def peers_versions(python: Path | str) -> dict[str, str | None]:
    """The installed versions of the peers' libraries in the venv of `python` (None: absent),
    for the results file."""
    code = (
        "import json, sys\n"
        "from importlib.metadata import PackageNotFoundError, version\n"
        "out = {}\n"
        "for key, dist in json.loads(sys.argv[1]).items():\n"
        "    try:\n"
        "        out[key] = version(dist)\n"
        "    except PackageNotFoundError:\n"
        "        out[key] = None\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run(
        [str(python), "-c", code, json.dumps(DISTRIBUTIONS)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"error: reading the peers' versions with {python} failed: {last}")
    return json.loads(result.stdout)


if __name__ == "__main__":
    from common import runs_dir

    print(ensure_peers_env(runs_dir() / "peers-venv"))
