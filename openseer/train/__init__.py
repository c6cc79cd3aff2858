"""Pretraining: config, data streams, the loop, checkpoints and monitoring."""
