"""Resumable training state, written atomically.

Each checkpoint is a folder `checkpoints/step-NNNNNNN/` holding the trainable weights
(safetensors), the optimiser, scheduler and RNG state (`torch.save`, read back with
`weights_only=True`, so loading never runs pickled code) and `state.json` (where the loop
was: stage, epoch, step, early-stopping state). The file `checkpoints/latest` names the
newest complete folder and is replaced atomically, so a kill while writing leaves the
previous checkpoint in force.

Commands whose `--out` is a finished model folder (finetune, prune) keep their resumable
state in a work folder beside it, `<out>.work/` (`config.yaml`, `checkpoints/`, the best
weights): the model folder itself appears only when complete (`runs.staged_output`), and
the work folder goes once it is in place. `start_work` and `end_work` handle that folder.
`lmshrink quantize` keeps one too, holding its finished variant folders and dev scores
instead of checkpoints.
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


def read_state(path: Path) -> dict[str, Any]:
    """The loop state saved in a checkpoint folder (without loading its tensors)."""
    return json.loads((path / "state.json").read_text())


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


# --- the work folder of a command whose --out is a model folder ---------------------------

# Settings a resumed run may change: they do not change what the run computes.
FREE_ON_RESUME = ("resume", "overwrite", "progress", "quiet", "threads")


def work_folder(out: Path) -> Path:
    """Where a command writing the model folder `out` keeps its resumable state."""
    return out.parent / f"{out.name}.work"


def check_same_settings(cls: type, saved_path: Path, cfg: Any, where: Path) -> None:
    """Raise RunFolderError naming every setting (dotted key) of `cfg` that differs from the
    config saved at `saved_path`, other than those in FREE_ON_RESUME."""
    from lmshrink.config import load_yaml, to_dict
    from lmshrink.errors import RunFolderError

    saved, mine = _flat(to_dict(load_yaml(cls, saved_path))), _flat(to_dict(cfg))
    changed = sorted(
        key
        for key in saved.keys() | mine.keys()
        if key.split(".")[0] not in FREE_ON_RESUME and saved.get(key) != mine.get(key)
    )
    if changed:
        raise RunFolderError(
            f"{where}: --resume needs the run's own settings, but {', '.join(changed)} "
            f"differ from its config.yaml; drop the changed options or start a new run."
        )


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def start_work(cfg: Any, cls: type) -> tuple[Path, Path | None]:
    """Check `cfg.out` and its work folder before any work; returns (work folder, checkpoint
    to resume from or None). A new run needs a new or empty `--out` (or `--overwrite`) and
    no unfinished run beside it (`--overwrite` discards one); `--resume` needs the work
    folder of a run with the same settings."""
    from lmshrink.errors import RunFolderError
    from lmshrink.runs import check_out

    if not cfg.resume:
        out = check_out(cfg.out, cfg.overwrite)
        work = work_folder(out)
        if work.exists() and not cfg.overwrite:
            raise RunFolderError(
                f"{work}: an unfinished run of {out} is kept there; pass --resume to continue "
                "it, or --overwrite to start again."
            )
        shutil.rmtree(work, ignore_errors=True)
        return work, None
    if not cfg.out:
        check_out(cfg.out, cfg.overwrite)  # the error that asks for --out
    out = Path(cfg.out).expanduser()
    work = work_folder(out)
    if not (work / "config.yaml").is_file():
        raise RunFolderError(
            f"{out}: no run to resume (no {work.name}/config.yaml beside it: the run finished, "
            "or never started); start it without --resume."
        )
    check_same_settings(cls, work / "config.yaml", cfg, work)
    return work, latest_checkpoint(work / "checkpoints")


def save_work_config(cfg: Any, work: Path) -> None:
    """Write the run's config into its work folder (what --resume compares against)."""
    import yaml

    from lmshrink.config import to_dict

    work.mkdir(parents=True, exist_ok=True)
    if not (work / "config.yaml").is_file():
        write_text_atomic(work / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))


def end_work(work: Path, error: BaseException | None = None, resumable: bool | None = None) -> None:
    """After the run (`error`: what stopped it, None when it finished). A finished run's work
    folder goes (its model folder is in place); so does a failed one's when it holds nothing
    to resume from (`resumable`; by default: whether it holds a checkpoint), or when a setting
    was wrong (a ConfigError: --resume, which needs the same settings, could not help). A
    kill, an interrupt or a NaN keeps it for --resume."""
    from lmshrink.errors import ConfigError

    keep = error is not None and not isinstance(error, ConfigError)
    if resumable is None:
        resumable = latest_checkpoint(work / "checkpoints") is not None
    if not keep or not resumable:
        shutil.rmtree(work, ignore_errors=True)
