"""Resumable training state, written atomically.

Each checkpoint is a folder `checkpoints/step-NNNNNNN/` holding the trainable weights
(safetensors), the optimiser, scheduler and RNG state (`torch.save`, read back with
`weights_only=True`, so loading never runs pickled code) and `state.json` (where the loop
was: stage, epoch, step, early-stopping state). The file `checkpoints/latest` names the
newest complete folder and is replaced atomically, so a kill while writing leaves the
previous checkpoint in force.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from lmshrink.runs import write_text_atomic


def save_checkpoint(
    folder: Path,
    step: str,
    weights: dict[str, Any],
    optimizer: Any,
    scheduler: Any,
    state: dict[str, Any],
) -> Path:
    """Write a checkpoint named by `step` (e.g. "1-0000200": stage 1, step 200) and make it
    the latest; returns its folder."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"step-{step}"
    shutil.rmtree(target, ignore_errors=True)
    tmp = folder / f".step-{step}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(
        {k: v.detach().contiguous() for k, v in weights.items()}, str(tmp / "weights.safetensors")
    )
    optimizer = getattr(optimizer, "optimizer", optimizer)  # unwrap accelerate's wrapper
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
        },
        tmp / "optim.pt",
    )
    (tmp / "state.json").write_text(json.dumps(state, indent=2))
    os.replace(tmp, target)
    previous = latest_checkpoint(folder)
    write_text_atomic(folder / "latest", target.name)
    if previous is not None and previous != target:
        shutil.rmtree(previous, ignore_errors=True)
    return target


def latest_checkpoint(folder: Path) -> Path | None:
    pointer = folder / "latest"
    if not pointer.is_file():
        return None
    target = folder / pointer.read_text().strip()
    return target if (target / "state.json").is_file() else None


def load_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(weights, optimiser/scheduler/RNG state, loop state) of a checkpoint folder."""
    import torch
    from safetensors.torch import load_file

    weights = load_file(str(path / "weights.safetensors"))
    optim = torch.load(path / "optim.pt", weights_only=True)
    state = json.loads((path / "state.json").read_text())
    return weights, optim, state


def save_weights(path: Path, weights: dict[str, Any]) -> None:
    """Atomically write a weights file (the best weights of the current stage)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file({k: v.detach().contiguous() for k, v in weights.items()}, str(tmp))
    os.replace(tmp, path)
