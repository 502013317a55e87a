"""Student model families: the BiLSTM student and its teacher-derived embeddings.

Importing this package imports torch and transformers; it is imported only where students
are built or loaded (`import lmshrink` registers the BiLSTM with the Auto API lazily).
"""

from __future__ import annotations

from lmshrink.registry import Registry
from lmshrink.students.bilstm import (
    BiLSTMConfig,
    BiLSTMForSequenceClassification,
    StudentOutput,
    register_auto,
)
from lmshrink.students.embeddings import build_bilstm, collect_vocab, reduce_embeddings

# Student builders by `--student` name. A builder takes (teacher, tokenizer, texts,
# task_head, max_length, **student settings) and returns an untrained student model.
STUDENTS = Registry("student")
STUDENTS.register("bilstm")(build_bilstm)

__all__ = [
    "STUDENTS",
    "BiLSTMConfig",
    "BiLSTMForSequenceClassification",
    "StudentOutput",
    "build_bilstm",
    "collect_vocab",
    "reduce_embeddings",
    "register_auto",
]
