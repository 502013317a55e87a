"""Compression building blocks: structured pruning, ONNX export, dynamic int8, their folders."""
