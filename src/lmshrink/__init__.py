"""lmshrink: compress fine-tuned transformer classifiers into small, fast models.

Each workflow is a function in its own module, taking the typed config the CLI builds:

    from lmshrink.distill import distill, DistillConfig
    report = distill(DistillConfig(...))

    lmshrink.finetune.finetune, lmshrink.distill.distill, lmshrink.prune.prune,
    lmshrink.export.export, lmshrink.quantize.quantize, lmshrink.evaluate.evaluate,
    lmshrink.bench.bench, lmshrink.report.report, lmshrink.shrink.shrink

The package itself lazily exports the config classes (so that
`import lmshrink` stays fast). It does not re-export functions named like their module
(`distill`, `export`, ...): once that submodule is imported, Python binds the module to
the package attribute, so such a name would sometimes mean the function and sometimes
the module.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "FinetuneConfig": "lmshrink.finetune",
    "DataConfig": "lmshrink.config",
    "TrainConfig": "lmshrink.config",
    "DistillConfig": "lmshrink.distill",
    "PruneConfig": "lmshrink.prune",
    "ExportConfig": "lmshrink.export",
    "QuantizeConfig": "lmshrink.quantize",
    "EvaluateConfig": "lmshrink.evaluate",
    "BenchConfig": "lmshrink.bench",
    "ReportConfig": "lmshrink.report",
    "ShrinkConfig": "lmshrink.shrink",
    "LmshrinkError": "lmshrink.errors",
}
_RENAMED: dict[str, tuple[str, str]] = {}

__all__ = sorted([*_API, *_RENAMED]) + ["__version__"]

# lmshrink's own model classes (BiLSTM and pruned students) load with
# AutoModelForSequenceClassification once `import lmshrink` has run; the registration waits
# until transformers' Auto API is imported, so that this import stays fast.
from lmshrink.models import autoregister as _autoregister  # noqa: E402

_autoregister.install()


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    if name in _RENAMED:
        module, attr = _RENAMED[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'lmshrink' has no attribute {name!r}")
