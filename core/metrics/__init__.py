"""Tail and constraint metrics, vectorised on the training device."""
