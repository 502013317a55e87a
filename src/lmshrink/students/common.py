"""What every student family shares: the `Student` record a builder returns, the registry
entry a family declares, the `student:` config block made from the families' settings, and
helpers for transformer students.

A family is one module of this package that registers a builder with `register_student`:

    @dataclasses.dataclass
    class NarrowSettings:
        layers: int = option(2, "number of transformer layers.", flag="student_layers")

    @register_student("narrow", NarrowSettings, "fewer/narrower layers from the teacher")
    def build_narrow(teacher, tokenizer, texts, task_head, max_length, settings) -> Student:
        ...

Its settings dataclass is described once: the `student:` block (`StudentConfig`, and so
the flags of `lmshrink distill`) is made from every family's settings. Family modules are
imported whenever this package is (the CLI reads their settings), so they import torch
inside their functions, never at the top.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lmshrink.errors import ConfigError, ModelError
from lmshrink.registry import Registry

if TYPE_CHECKING:
    from torch import nn

# The family a run builds when the config names none.
DEFAULT_KIND = "bilstm"


@dataclasses.dataclass
class Student:
    """An untrained student, as a family builds it, and what the run needs to know of it."""

    model: Any  # the nn.Module the stages train (Theseus: the wrapper around the successor)
    tokenizer: Any  # the tokenizer it reads: the teacher's, or a pretrained student's own
    layer_groups: list[tuple[str, list[Any]]]  # module groups, bottom-up, for unfreezing
    token_states: bool  # returns per-token hidden states, attentions and value vectors
    teacher_tokenizer: bool  # reads the teacher's token ids, so its tokens are the teacher's
    teacher_layers: list[int] | None = None  # per layer: the teacher layer it starts from
    final: Any = None  # the model to score and save, when it is not `model` (Theseus)

    @property
    def compares_tokens(self) -> bool:
        """Whether its per-token states line up with the teacher's (layer-wise losses)."""
        return self.token_states and self.teacher_tokenizer

    @property
    def final_model(self) -> Any:
        """The trained model to score and save (a `from_pretrained`-loadable one)."""
        return self.model if self.final is None else self.final


@dataclasses.dataclass(frozen=True)
class StudentFamily:
    """A registry entry: one student family, its settings, and its builder."""

    name: str
    settings: type  # dataclass of the keys it takes under `student:`
    help: str  # a few words for --student's help
    make: Callable[..., Student]  # (teacher, tokenizer, texts, task_head, max_length, settings)

    def settings_from(self, given: dict[str, Any]) -> Any:
        """The family's settings with the `given` ones set (the rest take their defaults);
        a setting of another family raises `ConfigError` naming what this one takes."""
        accepted = [f.name for f in dataclasses.fields(self.settings)]
        foreign = sorted(set(given) - set(accepted))
        if foreign:
            raise ConfigError(
                f"student setting(s) {', '.join(foreign)} do not apply to the "
                f"{self.name} student; it takes {', '.join(accepted)}."
            )
        return self.settings(**given)

    def build(
        self,
        teacher: Any,
        tokenizer: Any,
        texts: list[tuple[str, ...]],
        task_head: dict[str, Any],
        max_length: int,
        **settings: Any,
    ) -> Student:
        """Build a student from `teacher` (and its `tokenizer`), the training `texts`, the
        task's head entries and `max_length`, with the family's settings as keywords."""
        chosen = self.settings_from(settings)
        return self.make(teacher, tokenizer, texts, task_head, max_length, chosen)


STUDENTS: Registry[StudentFamily] = Registry("student")


def register_student(name: str, settings: type, help: str) -> Callable[[Callable], Callable]:
    """A decorator that registers a family's builder under `name` with its settings
    dataclass, and returns the builder unchanged."""
    add = STUDENTS.register(name)

    def decorator(make: Callable[..., Student]) -> Callable[..., Student]:
        if not dataclasses.is_dataclass(settings):
            raise ValueError(f"student {name!r}: settings must be a dataclass, not {settings!r}.")
        add(StudentFamily(name, settings, help, make))
        return make

    return decorator


def _given(cfg: Any) -> dict[str, Any]:
    """The settings a `student:` block sets (empty ones take the family's default)."""
    values = dataclasses.asdict(cfg)
    return {k: v for k, v in values.items() if k != "kind" and v not in (None, "", [])}


def student_settings(cfg: Any) -> Any:
    """The settings (the family's dataclass) that a `student:` config block chooses; an
    unknown kind or a setting of another family raises `ConfigError`."""
    return STUDENTS.get(cfg.kind).settings_from(_given(cfg))


def student_config_class(families: Registry[StudentFamily]) -> type:
    """The `student:` config block: `kind`, then every family's settings once, in the order
    the families were registered. A setting left empty (None, or an empty list) takes the
    chosen family's default; each field's help names the families that take it."""
    from lmshrink.config import option

    fields: dict[str, dict[str, Any]] = {}
    for kind, family in families.items():
        hints = typing.get_type_hints(family.settings)
        for f in dataclasses.fields(family.settings):
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            shown = f" (default {default})" if default not in (None, "", []) else ""
            entry = fields.setdefault(f.name, {"type": hints[f.name], "help": [], "flag": None})
            entry["help"].append(f"{kind}: {f.metadata.get('help', '')}".rstrip(".") + shown)
            flag = f.metadata.get("flag")
            if entry["flag"] not in (None, flag):
                raise ValueError(
                    f"student setting {f.name!r} has two flags ({entry['flag']}, {flag})"
                )
            entry["flag"] = entry["flag"] or flag
    kinds = ", ".join(f"{kind} ({family.help})" for kind, family in families.items())
    spec: list[tuple[str, Any, Any]] = [
        ("kind", str, option(DEFAULT_KIND, f"student family: {kinds}.", flag="student"))
    ]
    for name, entry in fields.items():
        tp = _optional_base(entry["type"])
        empty: Any = [] if typing.get_origin(tp) is list else None
        field_tp = tp if empty == [] else tp | None
        extra = {"flag": entry["flag"]} if entry["flag"] else {}
        spec.append((name, field_tp, option(empty, "; ".join(entry["help"]) + ".", **extra)))
    cls = dataclasses.make_dataclass("StudentConfig", spec)
    cls.__module__ = "lmshrink.students"  # where it is exported
    cls.__doc__ = (
        "The student to build. Settings left empty take the family's default; a setting "
        "that does not apply to the chosen family is an error."
    )
    return cls


def _optional_base(tp: Any) -> Any:
    """`X` of `X | None`, or `tp` itself."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return tp


# --- helpers for transformer students ---------------------------------------------------


def uniform_layer_ids(num_teacher_layers: int, num_layers: int) -> list[int]:
    """`num_layers` evenly spaced teacher layers (0-based), always ending with the last one.

    Student layer j starts from teacher layer `(j + 1) * L // k - 1`: 6 -> 3 keeps
    [1, 3, 5], 6 -> 2 keeps [2, 5], 4 -> 2 keeps [1, 3], 12 -> 6 keeps every odd layer.

    Why end with the last layer rather than start with the first ([0, 2, 4] for 6 -> 3):
    the teacher is a fine-tuned classifier, and its pooler and classifier were trained on
    its last layer's output. With that layer on top, the copied head reads the kind of
    representation it was fitted to, so the student starts close to the teacher's
    predictions; DistilBERT's own extraction kept the last layer for the same reason
    ([0, 2, 4, 7, 9, 11] of 12). Even spacing lets each student layer stand in for a block
    of L / k teacher layers, which is also the natural map for hidden-state losses.
    """
    if not 1 <= num_layers <= num_teacher_layers:
        raise ValueError(f"cannot choose {num_layers} of {num_teacher_layers} layers.")
    return [(j + 1) * num_teacher_layers // num_layers - 1 for j in range(num_layers)]


def find_layer_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(state-dict prefix, module list) of the model's stack of transformer layers.

    Found generically as the one `nn.ModuleList` named `layer` or `layers` that holds
    `config.num_hidden_layers` modules: `bert.encoder.layer` (BERT, MiniLM, RoBERTa, ELECTRA),
    `distilbert.transformer.layer` (DistilBERT).
    """
    from torch import nn

    count = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    found = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList)
        and len(module) == count
        and name.rsplit(".", 1)[-1] in ("layer", "layers")
    ]
    if count is None or len(found) != 1:
        raise ConfigError(
            f"{type(model).__name__}: could not find its list of transformer layers (one module "
            f"list named 'layer' or 'layers' with config.num_hidden_layers = {count} modules); "
            "transformer students support BERT-style encoders (BERT, MiniLM, RoBERTa, "
            "DistilBERT)."
        )
    return found[0]


def transformer_layer_groups(model: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """Named module groups, bottom-up, for gradual unfreezing of a transformer student.

    "embeddings", "layer.0" ... "layer.{k-1}", then "classifier": every other module that
    owns parameters (BERT's pooler and classifier, RoBERTa's classification head,
    DistilBERT's pre-classifier). The pooler sits with the classifier because a
    representation loss on the last layer's [CLS] vector gives it no gradient, just as it
    gives the classifier none. Every parameter is in exactly one group.
    """
    from torch import nn

    _, layers = find_layer_list(model)
    embeddings = getattr(model.base_model, "embeddings", None)
    if not isinstance(embeddings, nn.Module):
        raise ConfigError(
            f"{type(model).__name__}: has no embeddings module at base_model.embeddings; "
            "transformer students support BERT-style encoders."
        )
    groups: list[tuple[str, list[nn.Module]]] = [("embeddings", [embeddings])]
    groups += [(f"layer.{i}", [layer]) for i, layer in enumerate(layers)]
    covered = {id(p) for _, modules in groups for m in modules for p in m.parameters()}
    rest = [
        m for m in model.modules() if any(id(p) not in covered for p in m.parameters(recurse=False))
    ]
    if rest:
        groups.append(("classifier", rest))
    return groups


def layer_groups_of(model: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """A student model's groups for gradual unfreezing, bottom-up: its own `layer_groups()`
    (the BiLSTM, Theseus) or those of a transformer (`transformer_layer_groups`)."""
    own = getattr(model, "layer_groups", None)
    return own() if callable(own) else transformer_layer_groups(model)


def is_token_classifier(model: Any) -> bool:
    """Whether `model` tags every token (a `*ForTokenClassification`, logits [B, T, C]) rather
    than labelling the whole sequence: the Hugging Face naming every family follows."""
    return type(model).__name__.endswith("ForTokenClassification")


def reads_word_shapes(model: Any) -> bool:
    """Whether a token model reads `word_shape_ids` (the BiLSTM tagger with word shapes says
    so by its `reads_word_shapes`), so that its inputs must be encoded with
    `data.batching.encode(..., word_shapes=True)`."""
    return bool(getattr(model, "reads_word_shapes", False))


def check_teacher(teacher: nn.Module, task_head: dict[str, Any]) -> None:
    """The teacher must be a sequence or token classifier whose head fits the task; a
    student built from a token classifier is a token classifier too."""
    name = type(teacher).__name__
    if not (name.endswith("ForSequenceClassification") or is_token_classifier(teacher)):
        raise ModelError(
            f"the teacher is a {name}, not a sequence or token classifier; load the fine-tuned "
            "teacher with AutoModelForSequenceClassification or AutoModelForTokenClassification "
            "(lmshrink finetune makes one)."
        )
    wanted = task_head.get("num_labels")
    if wanted is not None and teacher.config.num_labels != wanted:
        raise ModelError(
            f"the teacher's head has {teacher.config.num_labels} output(s) but the task needs "
            f"{wanted}; use a teacher fine-tuned for this task."
        )


def apply_task_head(config: Any, task_head: dict[str, Any]) -> None:
    """Write the head's entries (`lmshrink.models.loading.task_head_settings`) into `config`.

    `num_labels` first: in transformers 5 it is derived from id2label, and setting it
    replaces id2label with generic names, which the given id2label then overwrites.
    """
    for key in ("num_labels", "id2label", "label2id", "problem_type"):
        if key in task_head:
            setattr(config, key, task_head[key])


def positive_int(name: str, value: Any) -> int:
    """`value` if it is a whole number >= 1, else a `ConfigError` naming the setting."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
    return value
