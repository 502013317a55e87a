"""Entity tag schemes: reading IOB1, IOB2 and BIOES tags as entity spans, and writing IOB2.

Every NER file is converted to IOB2 (`B-X` starts an entity, `I-X` continues it, `O` is
outside) on read, so models, losses and metrics see one scheme. No scheme option is needed:
one lenient reading covers all three. A `B-X` or `S-X` always starts an entity; `I-X` or
`E-X` continues the open entity when it has type X, and otherwise starts one (an `I-` after
`O` or after another type, IOB1's way and what conlleval and seqeval's default mode do);
`E-X` and `S-X` close it. A well-formed IOB2 sequence reads back unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

OUTSIDE = "O"
PREFIXES = ("B", "I", "E", "S")


def parse_tag(tag: str) -> tuple[str, str]:
    """("B"/"I"/"E"/"S", type) of an entity tag, ("O", "") for O; ValueError otherwise."""
    if tag == OUTSIDE:
        return OUTSIDE, ""
    prefix, sep, kind = tag.partition("-")
    if not sep or prefix not in PREFIXES or not kind or kind != kind.strip():
        raise ValueError(f"tag {tag!r} is not O or B-/I-/E-/S- followed by an entity type")
    return prefix, kind


def tag_spans(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """The entities of one sentence's tags as (start, end, type), end exclusive, in order.

    Read leniently as the module docstring says; tags are assumed valid (see `parse_tag`).
    """
    spans: list[tuple[int, int, str]] = []
    start, open_type = -1, ""  # the open entity; "" when none is open
    for i, tag in enumerate(tags):
        prefix, kind = parse_tag(tag)
        continues = open_type == kind and prefix in ("I", "E")
        if not continues:
            if open_type:
                spans.append((start, i, open_type))
            start, open_type = i, kind  # kind is "" for O: nothing opens
        if prefix in ("E", "S"):  # the entity ends on this word
            spans.append((start, i + 1, kind))
            open_type = ""
    if open_type:
        spans.append((start, len(tags), open_type))
    return spans


def spans_to_iob2(spans: Iterable[tuple[int, int, str]], length: int) -> list[str]:
    """IOB2 tags of `length` words holding the given (non-overlapping) entity spans."""
    tags = [OUTSIDE] * length
    for start, end, kind in spans:
        tags[start] = f"B-{kind}"
        for i in range(start + 1, end):
            tags[i] = f"I-{kind}"
    return tags


def to_iob2(tags: Sequence[str]) -> list[str]:
    """One sentence's IOB1, IOB2 or BIOES tags as IOB2 (the same entities)."""
    return spans_to_iob2(tag_spans(tags), len(tags))


def iob2_labels(types: Iterable[str]) -> tuple[str, ...]:
    """The IOB2 label set of some entity types: O first, then B-/I- of each type, sorted."""
    return (OUTSIDE,) + tuple(f"{p}-{t}" for t in sorted(set(types)) for p in ("B", "I"))


def label_types(labels: Sequence[str]) -> list[str]:
    """The entity types of an IOB2 label set, in order of first appearance."""
    return list(dict.fromkeys(parse_tag(label)[1] for label in labels if label != OUTSIDE))


def check_iob2_labels(labels: Sequence[str]) -> str | None:
    """Why `labels` is not a usable IOB2 label set (O, and B-X with I-X for each type X),
    or None when it is."""
    if len(set(labels)) != len(labels):
        return "it lists a label twice"
    if OUTSIDE not in labels:
        return "it has no O label"
    for label in labels:
        try:
            prefix, kind = parse_tag(label)
        except ValueError as exc:
            return str(exc)
        if prefix in ("E", "S"):
            return f"{label!r} is a BIOES label; give IOB2 labels (O, B-X, I-X)"
        if prefix in ("B", "I"):
            partner = f"{'I' if prefix == 'B' else 'B'}-{kind}"
            if partner not in labels:
                return f"it has {label!r} but not {partner!r}"
    if not label_types(labels):
        return "it has no entity type"
    return None
