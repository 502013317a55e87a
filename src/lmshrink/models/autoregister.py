"""Register lmshrink's model classes with transformers' Auto API, without a slow import.

Registering eagerly would import torch and transformers' modeling code (seconds) on every
`import lmshrink`. Instead, `install()` adds an import hook: the moment
`transformers.models.auto.modeling_auto` finishes loading (which any use of
`AutoModelForSequenceClassification` or `AutoModelForTokenClassification` does), lmshrink's
classes are registered with every Auto class they serve (the BiLSTM students with both). If
that module is already loaded, they are registered at once.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any

AUTO_MODULE = "transformers.models.auto.modeling_auto"

# "module:function" of each registration; each must be idempotent.
REGISTRATIONS = [
    "lmshrink.models.bilstm:register_auto",
    "lmshrink.models.pruned_bert:register_auto",
    "lmshrink.models.static:register_auto",
]

_done = False


def register_all() -> None:
    """Run every registration not yet done (safe to call again).

    A registration that fails (e.g. because it ran while transformers was still importing
    a module it needs) is retried on the next call, and said with a warning instead of
    being lost inside transformers' import machinery. `lmshrink.models.loading` calls this again
    before loading, so a model folder of lmshrink's still loads.
    """
    global _done
    if _done:
        return
    failed = []
    for target in REGISTRATIONS:
        if target in _registered:
            continue
        module, function = target.split(":")
        try:
            getattr(importlib.import_module(module), function)()
        except Exception as exc:  # surfaced below; the next call retries
            failed.append(f"{target} ({type(exc).__name__}: {exc})")
        else:
            _registered.add(target)
    _done = not failed
    if failed:
        import warnings

        warnings.warn(
            f"lmshrink could not register model classes yet: {'; '.join(failed)}",
            RuntimeWarning,
            stacklevel=2,
        )


_registered: set[str] = set()


# Finder and loader are duck-typed: importing importlib.abc would cost ~20 ms on every import.
class _AfterAutoImport:
    """Finds nothing itself; wraps the real loader of AUTO_MODULE to register afterwards."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != AUTO_MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _RegisteringLoader(spec.loader)
                return spec
        return None


class _RegisteringLoader:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def create_module(self, spec: Any) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        _uninstall()
        register_all()


_finder = _AfterAutoImport()


def _uninstall() -> None:
    if _finder in sys.meta_path:
        sys.meta_path.remove(_finder)


def install() -> None:
    """Register now if transformers' Auto API is loaded, else when it gets loaded."""
    if AUTO_MODULE in sys.modules:
        register_all()
    elif _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
