"""Routes: a few lines each, one use-case call."""
