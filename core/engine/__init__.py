"""The training engine: multipliers, dual optimizers, methods, constraint kinds, the trainer."""
