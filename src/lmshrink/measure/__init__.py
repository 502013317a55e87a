"""Measurement: task metrics, scoring a model on a split, CPU speed, the machine it ran on."""
