"""File formats at the bottom of the package: atomic writes and self-describing training checkpoints.

Nothing here imports another part of openseer, so every layer above may use it.
"""
