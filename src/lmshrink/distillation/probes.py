"""Read internal tensors that Hugging Face models do not return, with forward hooks.

MiniLM's value-relation loss needs each layer's value vectors (the output of the self-
attention value projection), which no `output_*` flag returns. `capture_values` hooks the
value projections for the length of a `with` block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from lmshrink.errors import ModelError

# Module-name endings of the self-attention value projection, per family:
# BERT, RoBERTa, ELECTRA, MiniLM (`encoder.layer.N.attention.self.value`) and DistilBERT
# (`transformer.layer.N.attention.v_lin`). The leading dot keeps `crossattention.self.value`
# (decoder cross-attention) out.
VALUE_SUFFIXES = (".attention.self.value", ".attention.v_lin")


def value_module_names(model: Any) -> list[str]:
    """The names of `model`'s value projections, in layer order."""
    return [name for name, _ in model.named_modules() if name.endswith(VALUE_SUFFIXES)]


@contextlib.contextmanager
def capture_values(model: Any) -> Iterator[list[Any]]:
    """Yield a list whose slot i holds layer i+1's value vectors [B, T, D] from the last forward.

    The list has one slot per transformer layer (None until a forward runs); each forward
    overwrites the slots, so one `with` block can span many steps. The tensors keep their
    graph (the student's values need gradients; run the teacher under `torch.no_grad()`).
    The hooks are removed when the block ends, also on an exception.

        with capture_values(student) as values:
            out = student(**batch)
            loss = relation(student_values=values, ...)

    A model without a recognised value projection raises `ModelError`.
    """
    named = dict(model.named_modules())
    names = value_module_names(model)
    if not names:
        raise ModelError(
            f"{type(model).__name__} has no self-attention value projection (a module named "
            f"*{' or *'.join(VALUE_SUFFIXES)}); value_relation needs a BERT-family or "
            "DistilBERT model."
        )
    values: list[Any] = [None] * len(names)
    handles = []

    def make_hook(slot: int):
        def hook(module: Any, args: Any, output: Any) -> None:
            values[slot] = output  # [B, T, D]

        return hook

    try:
        for slot, name in enumerate(names):
            handles.append(named[name].register_forward_hook(make_hook(slot)))
        yield values
    finally:
        for handle in handles:
            handle.remove()
