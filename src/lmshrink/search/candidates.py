"""The architectures `lmshrink shrink` considers, and how each is trained.

An architecture is a family and its size (`bilstm:embedding_dim=64:hidden_size=256`); each is
served in one or more backends (ONNX fp32, dynamic int8 and static int8; fastText by fastText
itself; the teacher needs no training). A candidate is one architecture in one backend: the
unit that is timed, scored and chosen. Speed depends on the architecture, not on its weights,
so every architecture is timed untrained; training is what costs, so only those that can win
are trained (see `lmshrink.search.plan`).

The grid below is the default: a few sizes per family, spanning the teacher's own speed down
to fastText's. Users pass their own with `--candidates`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from lmshrink.errors import ConfigError

TEACHER = "teacher"
PRUNED = "pruned"
FASTTEXT = "fasttext"
# ONNX Runtime's dynamic int8 (activation scales computed per call) and static int8 (scales
# calibrated once on training examples) are both timed and scored: on the SST-2 teacher static
# int8 kept fp32's dev accuracy (90.25 against dynamic's 89.11) at 1.12x dynamic's batch-1
# time, while a BiLSTM's static graph keeps its LSTM in fp32 and runs 1.9x slower than
# dynamic (bench/results/deploy.md); which one wins depends on the family and the budget.
ONNX_BACKENDS = ("onnx-fp32", "onnx-int8", "onnx-int8-static")

# Families in the order of the accuracy expected of them at equal training (a prior from
# bench/results: the teacher itself, the pruned teacher, its layers, the BiLSTM, static
# embeddings, fastText). The search trains in this order, so a search cut short keeps the
# likeliest winners. The pruned teacher comes before the layer-subset student: at the same
# speed (2x) they score alike (SST-2: 89.33 against the 3-layer TinyBERT student's 90.02 in
# fp32, 89.56 against 89.79 in int8 ONNX; MRPC: 98.9% of the teacher against 98.6%), at 3x
# pruning still keeps 98-99% (no layer student was measured there), at 5-6x neither wins on
# both tasks (pruned 94.0% on SST-2 and 97.7% on MRPC, the 2-layer hidden-256 student 95.8%
# and 89.4%), and pruning costs less to train (SST-2: 9 minutes against 22). See
# bench/results/pruning.md, glue_students.md and deploy.md.
FAMILY_ORDER = (TEACHER, PRUNED, "layers", "bilstm", "static", FASTTEXT)

# Default grid per task kind (token tasks: no static or fastText student, which label
# sentences; a pruned tagger can be named with --candidates, but its recipe, `recipes.PRUNE`,
# was measured on sentence tasks only, so the default token grid leaves it out).
# Sizes run from the teacher's speed down to the fastest each family reaches (a pruned
# teacher keeping 39% of its encoder ran 2.2-2.3x faster, 23%: 3.2-3.8x; pruning.md). The
# largest static student adds a hidden layer and hashed token pairs to the mean of token
# vectors: on SST-2, 82.68 dev against 81.42 for the plain mean, at 1.4x its end-to-end time
# (each alone: +0.35 and +0.12; bench/results/static_students.md).
SENTENCE_GRID = (
    "teacher",
    "pruned:keep=0.5",
    "pruned:keep=0.3",
    "layers:layers=3",
    "layers:layers=2",
    "bilstm:embedding_dim=64:hidden_size=256",
    "bilstm:embedding_dim=64:hidden_size=128",
    "bilstm:embedding_dim=32:hidden_size=64",
    "static:embedding_dim=256:hidden_size=256:bigram_buckets=16384",
    "static:embedding_dim=256",
    "static:embedding_dim=64",
    "fasttext",
)
TOKEN_GRID = (
    "teacher",
    "layers:layers=3",
    "layers:layers=2",
    "bilstm:embedding_dim=64:hidden_size=192",
    "bilstm:embedding_dim=64:hidden_size=96",
)


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A family and its settings, e.g. bilstm with embedding_dim 64 and hidden_size 256."""

    family: str
    settings: tuple[tuple[str, Any], ...] = ()

    @property
    def name(self) -> str:
        """A folder-safe name: `bilstm-embedding_dim64-hidden_size256`."""
        return "-".join([self.family] + [f"{k}{v}" for k, v in self.settings])

    @property
    def spec(self) -> str:
        """The `--candidates` form it was parsed from."""
        if not self.settings:
            return self.family
        return f"{self.family}:" + ":".join(f"{k}={v}" for k, v in self.settings)

    @property
    def trained(self) -> bool:
        return self.family != TEACHER

    @property
    def backends(self) -> tuple[str, ...]:
        return ("fasttext",) if self.family == FASTTEXT else ONNX_BACKENDS

    @property
    def size(self) -> float:
        """How large it is within its family (the product of its numeric settings): the
        search tries the largest that fits first, the likeliest to be most accurate."""
        values = [v for _, v in self.settings if isinstance(v, int | float)]
        return math.prod(values) if values else 0.0

    def prior(self) -> tuple[int, float]:
        """Sort key: the family's rank in FAMILY_ORDER, then the larger first."""
        return (FAMILY_ORDER.index(self.family), -self.size)


def _value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_architecture(spec: str) -> Architecture:
    """`family` or `family:key=value:key=value` -> Architecture (commas also separate the
    settings in a YAML list; on the command line a comma separates candidates); an unknown
    family or a malformed setting raises ConfigError naming the form."""
    family, _, rest = spec.strip().partition(":")
    if family not in FAMILY_ORDER:
        raise ConfigError(
            f"--candidates {spec!r}: unknown family {family!r}; use one of "
            f"{', '.join(FAMILY_ORDER)}, e.g. bilstm:embedding_dim=64:hidden_size=256."
        )
    settings = []
    for item in filter(None, (part.strip() for part in rest.replace(",", ":").split(":"))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise ConfigError(
                f"--candidates {spec!r}: {item!r} is not key=value; write e.g. "
                "bilstm:embedding_dim=64:hidden_size=256."
            )
        settings.append((key.strip(), _value(value.strip())))
    if family == TEACHER and settings:
        raise ConfigError(f"--candidates {spec!r}: the teacher takes no settings.")
    return Architecture(family, tuple(settings))


def default_grid(token_level: bool) -> list[str]:
    return list(TOKEN_GRID if token_level else SENTENCE_GRID)


def architectures(specs: list[str], token_level: bool) -> list[Architecture]:
    """The architectures of `specs` (the default grid when empty), teacher first, each once,
    checked against the task kind."""
    archs = [parse_architecture(s) for s in (specs or default_grid(token_level))]
    if token_level:
        wrong = sorted({a.family for a in archs if a.family in ("static", FASTTEXT)})
        if wrong:
            raise ConfigError(
                f"--candidates: the {' and '.join(wrong)} student(s) label whole sentences, so "
                "they cannot tag words; use teacher, layers or bilstm for a token task."
            )
    for arch in archs:
        if arch.family == PRUNED:
            pruned_keep(arch)  # a wrong setting fails here, before anything is timed
    if not any(a.family == TEACHER for a in archs):
        archs.insert(0, Architecture(TEACHER))  # the baseline every user has for free
    seen: dict[str, Architecture] = {}
    for arch in archs:
        seen.setdefault(arch.name, arch)
    return sorted(seen.values(), key=Architecture.prior)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One architecture in one backend: what is timed, scored and chosen."""

    arch: Architecture
    backend: str

    @property
    def name(self) -> str:
        return f"{self.arch.name}/{self.backend}"


def fasttext_settings(arch: Architecture, settings_class: type) -> Any:
    """The FastTextSettings of a fastText architecture (its `--candidates` keys)."""
    given = dict(arch.settings)
    known = {f.name for f in dataclasses.fields(settings_class)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise ConfigError(
            f"--candidates {arch.spec}: the fastText student takes {', '.join(sorted(known))}, "
            f"not {', '.join(unknown)}."
        )
    return settings_class(**given)


def pruned_keep(arch: Architecture) -> float:
    """The share of encoder parameters a pruned architecture keeps (`pruned:keep=0.5`, as
    `lmshrink prune --target-params`); anything else raises ConfigError naming the form."""
    given = dict(arch.settings)
    keep = given.get("keep")
    if set(given) != {"keep"} or not isinstance(keep, int | float) or not 0 < keep < 1:
        raise ConfigError(
            f"--candidates {arch.spec}: a pruned teacher takes one setting, keep, the share of "
            "its encoder parameters to keep, between 0 and 1: e.g. pruned:keep=0.5."
        )
    return float(keep)
