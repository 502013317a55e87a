"""Data: task definitions and kinds, reading splits, tokenizing and batching, transfer sets."""
