"""Distillation: stages, losses and their registry, the objective, teacher labelling and caches."""
