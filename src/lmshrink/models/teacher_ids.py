"""What lmshrink's own students that read the teacher's token ids share (BiLSTM, static).

They keep an embedding row only for the teacher ids seen in training; the `token_map` buffer
(saved with the weights) sends every teacher id to its row, unknown ids to `unk_row`. So a
served student takes the teacher tokenizer's output as it is.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel


def check_rows_and_dropout(config: Any) -> None:
    """A teacher-id student config's dropout is in [0, 1) and its pad and unknown rows are
    rows of its table; ValueError otherwise."""
    if not 0.0 <= float(config.dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {config.dropout}.")
    for name in ("pad_row", "unk_row"):
        if not 0 <= getattr(config, name) < config.vocab_size:
            raise ValueError(
                f"{name} {getattr(config, name)} is not a row of the {config.vocab_size}-row "
                "embedding table."
            )


def check_teacher_token_ids(config: Any) -> None:
    """The special token ids of a teacher-id student config are ids of the teacher's
    tokenizer (below `teacher_vocab_size`); ValueError otherwise."""
    for name in ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id"):
        value = getattr(config, name, None)
        if isinstance(value, int) and not 0 <= value < config.teacher_vocab_size:
            raise ValueError(
                f"{name} {value} is outside the teacher's {config.teacher_vocab_size} ids."
            )


class TeacherIdModel(PreTrainedModel):
    """Base of the teacher-id students: the default token map, loading that realigns the
    weights, and the input embeddings accessors (the table is `self.embeddings`)."""

    main_input_name = "input_ids"

    def default_token_map(self) -> torch.Tensor:
        """Identity for ids below `vocab_size`, `unk_row` above: the map of a student whose
        table was not trimmed. The family's builder replaces it with the real map."""
        ids = torch.arange(self.config.teacher_vocab_size)  # [V_teacher]
        return torch.where(ids < self.config.vocab_size, ids, self.config.unk_row)

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        """`PreTrainedModel.from_pretrained`, then `realign_weights()`, so that a reloaded
        student computes bit-identical logits to the one that was saved."""
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # output_loading_info=True
        model.realign_weights()
        return loaded

    @torch.no_grad()
    def realign_weights(self) -> None:
        """Copy CPU weights that sit at addresses not aligned to 64 bytes.

        safetensors loading can leave tensors at odd offsets of the file buffer; the CPU
        kernels (LSTM, matmul) then take a differently vectorised path that sums in another
        order, so logits differ from the saved model's in the last bits. A copy is aligned.
        """
        for tensor in [*self.parameters(), *self.buffers()]:
            if tensor.device.type == "cpu" and tensor.data_ptr() % 64:
                tensor.data = tensor.data.clone()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings = value
