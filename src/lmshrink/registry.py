"""One small registry that maps names to components (students, losses).

A name is checked when it is registered, so a bad or duplicate name fails at import
time, in the code that defines it. Looking up an unknown name is the user's mistake (a
typo in a config or flag) and raises a `ConfigError` that lists the known names.

    LOSSES = Registry("loss")

    @LOSSES.register("soft_kl")
    class SoftKLLoss(nn.Module): ...

    LOSSES.get("soft_kl")  # -> SoftKLLoss

A registry may name the module that registers its built-in entries (`builtins`); it is
imported on the first lookup, so a light module can hold the registry and ask it questions
without importing the heavy modules that fill it until it must.

This module imports nothing heavy (no torch), so `import lmshrink` stays fast.
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Callable
from typing import Generic, TypeVar

from lmshrink.errors import ConfigError

T = TypeVar("T")

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


def _plural(word: str) -> str:
    return word + ("es" if word.endswith(("s", "x", "sh", "ch")) else "s")


class Registry(Generic[T]):
    """Names to objects of one kind (e.g. "loss" or "student"), with checked names."""

    def __init__(self, kind: str, builtins: str | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        # The module that registers the built-in entries, imported before the first lookup.
        self._builtins = builtins

    def _load_builtins(self) -> None:
        if self._builtins is not None:
            module, self._builtins = self._builtins, None  # once, even if it looks things up
            try:
                importlib.import_module(module)
            except BaseException:
                self._builtins = module  # a failed import is tried again on the next lookup
                raise

    def register(self, name: str) -> Callable[[T], T]:
        """A decorator that registers its target under `name` and returns it unchanged.

        A name must be lower snake case (`^[a-z][a-z0-9_]*$`) and new; otherwise this is a
        programming error and raises `ValueError` right away, before anything is decorated.
        """
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise ValueError(
                f"{self.kind} name {name!r} is invalid; use lower snake case matching "
                f"{NAME_PATTERN.pattern}."
            )
        if name in self._items:
            raise ValueError(
                f"{self.kind} name {name!r} is already registered to {self._items[name]!r}."
            )

        def decorator(obj: T) -> T:
            # Checked again here: two decorators may have been made before either applied.
            if name in self._items:
                raise ValueError(
                    f"{self.kind} name {name!r} is already registered to {self._items[name]!r}."
                )
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """The object registered under `name`; an unknown name raises `ConfigError`."""
        self._load_builtins()
        try:
            return self._items[name]
        except (KeyError, TypeError):
            pass
        kinds = _plural(self.kind)
        if not self._items:
            raise ConfigError(f"unknown {self.kind} {name!r}; no {kinds} are registered.")
        close = difflib.get_close_matches(str(name), self.names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"unknown {self.kind} {name!r}{hint}; known {kinds}: {', '.join(self.names())}."
        )

    def names(self) -> list[str]:
        """The registered names, sorted."""
        self._load_builtins()
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        """(name, object) pairs in the order they were registered."""
        self._load_builtins()
        return list(self._items.items())

    def remove(self, name: str) -> T:
        """Unregister `name` and return its object (for tests and plugins that register an
        entry for a while); an unknown name raises `ConfigError`."""
        obj = self.get(name)
        del self._items[name]
        return obj

    def __contains__(self, name: object) -> bool:
        self._load_builtins()
        return isinstance(name, str) and name in self._items

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()})"
