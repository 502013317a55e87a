"""`lmshrink export`: a model as ONNX, checked against PyTorch on the dev set.

The output folder is self-contained: `model.onnx`, the tokenizer, the model's `lmshrink.json`
when it has one, `lmshrink.log` (what the command printed), and `export.json` (inputs,
labels, tokenizer settings, versions, parity; for a token classifier, how raw text is split
into words and where each word's tag is read).
Past `--tolerance` the export fails with `ParityError` and nothing is written to `--out`.
How the graph is made and checked (exporter, opset, parity): `lmshrink.compress.onnx`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lmshrink.compress.onnx import OnnxSettings, check_settings, export_folder, require_onnx
from lmshrink.config import DataConfig, RunSettings, option
from lmshrink.errors import ConfigError
from lmshrink.models.sources import read_model
from lmshrink.reporting.progress import LOG_FILE, for_command, log_to
from lmshrink.runs import apply_threads, staged_output


@dataclasses.dataclass
class ExportConfig(RunSettings):
    """`lmshrink export`: write a model as ONNX, checked against PyTorch on the dev set.
    `--out` receives model.onnx, the tokenizer and export.json."""

    model: str = option(
        "", "model folder (or run folder holding model/) to export.", positional=True
    )
    format: str = option("onnx", "export format (onnx is the only one).")
    onnx: OnnxSettings = dataclasses.field(default_factory=OnnxSettings)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)


@for_command
def export(cfg: ExportConfig) -> dict[str, Any]:
    """Export a model to ONNX in `cfg.out`, checked against PyTorch on dev; returns the
    content of export.json (inputs, labels, parity numbers) plus `out`."""
    if cfg.format.lower() != "onnx":
        raise ConfigError(f"--format {cfg.format!r} is not supported; use --format onnx.")
    check_settings(cfg.onnx)
    require_onnx()
    apply_threads(cfg.threads)
    src = read_model(cfg.model, cfg.data, cfg.seed, out=cfg.out, overwrite=cfg.overwrite)
    assert src.out is not None
    with staged_output(src.out) as stage:
        log_to(stage / LOG_FILE)
        meta = export_folder(src, stage, cfg.onnx, progress=True)
    return {**meta, "out": str(src.out), "files": [s.source for s in src.splits]}


def format_summary(result: dict[str, Any]) -> str:
    """One line for the terminal: where the graph went and how closely it matches PyTorch."""
    parity = result["parity"]
    sizes = ", ".join(parity["by_batch_size"])
    files = ", ".join(result.get("files", []))
    # a token classifier is compared per word, at each word's first sub-token
    words = f" over {parity['words']:,} words" if "words" in parity else ""
    unit = "word predictions" if words else "predictions"
    return (
        f"saved {result['out']}/model.onnx (opset {result['opset']}, inputs "
        f"{', '.join(result['inputs'])}); parity on {parity.get('split', 'dev')}"
        + (f" ({files})" if files else "")
        + f" at batch sizes {sizes}{words}: max |logit "
        f"difference| {parity['max_abs_diff']:.2g}, {100 * parity['agreement']:.2f}% identical "
        f"{unit}"
    )
