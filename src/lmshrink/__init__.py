"""lmshrink: compress fine-tuned transformer classifiers into small, fast models.

The public API is imported lazily so that `import lmshrink` stays fast:

    from lmshrink import finetune, distill, DistillConfig
    report = distill(DistillConfig(...))

Each workflow is a function taking its typed config (the same one the CLI builds):
finetune, distill, prune, export, quantize, evaluate, bench, report.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "finetune": "lmshrink.teacher",
    "distill": "lmshrink.distill",
    "prune": "lmshrink.prune",
    "export": "lmshrink.export",
    "quantize": "lmshrink.quantize",
    "evaluate": "lmshrink.evaluate",
    "bench": "lmshrink.bench",
    "FinetuneConfig": "lmshrink.config",
    "DataConfig": "lmshrink.config",
    "TrainConfig": "lmshrink.config",
    "DistillConfig": "lmshrink.distill",
    "PruneConfig": "lmshrink.prune",
    "ExportConfig": "lmshrink.export",
    "QuantizeConfig": "lmshrink.quantize",
    "EvaluateConfig": "lmshrink.evaluate",
    "BenchConfig": "lmshrink.bench",
    "ReportConfig": "lmshrink.gather",
    "LmshrinkError": "lmshrink.errors",
}
# `report` (gathering run folders) lives in lmshrink.gather as `gather`.
_RENAMED = {"report": ("lmshrink.gather", "gather")}

__all__ = sorted([*_API, *_RENAMED]) + ["__version__"]

# lmshrink's own model classes (BiLSTM and pruned students) load with
# AutoModelForSequenceClassification once `import lmshrink` has run; the registration waits
# until transformers' Auto API is imported, so that this import stays fast.
from lmshrink import _autoregister  # noqa: E402

_autoregister.install()


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    if name in _RENAMED:
        module, attr = _RENAMED[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'lmshrink' has no attribute {name!r}")
