"""File formats at the bottom of the package: atomic writes, self-describing training checkpoints, and reading
sharded (``torch.distributed.checkpoint``) checkpoints.

Nothing here imports another part of openseer, so every layer above may use it.
"""
