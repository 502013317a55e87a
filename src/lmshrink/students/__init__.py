"""Student model families: the BiLSTM student and its teacher-derived embeddings.

Importing this package imports torch and transformers; it is imported only where students
are built or loaded (`import lmshrink` registers the BiLSTM with the Auto API lazily).
"""

from __future__ import annotations

from lmshrink.models.bilstm import (
    BiLSTMConfig,
    BiLSTMForSequenceClassification,
    StudentOutput,
    register_auto,
)
from lmshrink.registry import Registry
from lmshrink.students.bilstm import build_bilstm, collect_vocab, reduce_embeddings
from lmshrink.students.theseus import TheseusModel, build_theseus
from lmshrink.students.transformer import (
    build_layer_subset,
    build_narrow,
    build_pretrained,
    student_tokenizer,
    transformer_layer_groups,
    uniform_layer_ids,
)

# Student builders by `--student` name. A builder takes (teacher, tokenizer, texts,
# task_head, max_length, **student settings) and returns an untrained student model.
STUDENTS = Registry("student")
STUDENTS.register("bilstm")(build_bilstm)
STUDENTS.register("layers")(build_layer_subset)
STUDENTS.register("narrow")(build_narrow)
STUDENTS.register("pretrained")(build_pretrained)
STUDENTS.register("theseus")(build_theseus)

__all__ = [
    "STUDENTS",
    "BiLSTMConfig",
    "BiLSTMForSequenceClassification",
    "StudentOutput",
    "TheseusModel",
    "build_bilstm",
    "build_layer_subset",
    "build_narrow",
    "build_pretrained",
    "build_theseus",
    "collect_vocab",
    "reduce_embeddings",
    "register_auto",
    "student_tokenizer",
    "transformer_layer_groups",
    "uniform_layer_ids",
]
