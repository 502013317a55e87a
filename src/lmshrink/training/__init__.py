"""Training: the one loop and its callbacks, optimiser and schedule, checkpoints, and
inference over batches."""
