"""lmshrink: compress fine-tuned transformer classifiers into small, fast models.

The public API is imported lazily so that `import lmshrink` stays fast:

    from lmshrink import finetune, evaluate, FinetuneConfig, EvaluateConfig
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "finetune": "lmshrink.teacher",
    "evaluate": "lmshrink.evaluate",
    "FinetuneConfig": "lmshrink.config",
    "DataConfig": "lmshrink.config",
    "TrainConfig": "lmshrink.config",
    "EvaluateConfig": "lmshrink.evaluate",
    "LmshrinkError": "lmshrink.errors",
}

__all__ = sorted(_API) + ["__version__"]

# lmshrink's own model classes (BiLSTM and pruned students) load with
# AutoModelForSequenceClassification once `import lmshrink` has run; the registration waits
# until transformers' Auto API is imported, so that this import stays fast.
from lmshrink import _autoregister  # noqa: E402

_autoregister.install()


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'lmshrink' has no attribute {name!r}")
