"""The embedding queue SwAV uses when the batch is small relative to the number of prototypes (Sec. 4.3)."""

from __future__ import annotations

import torch


class EmbeddingQueue:
    """Per process: the last ``length`` embeddings of each assignment crop, newest first.

    Its scores against the current prototypes are stacked before the batch's scores when computing codes, so
    Sinkhorn's equipartition acts on length + B samples per process. The queue is only used once it is full
    (as in the reference code), and is saved in checkpoints.
    """

    def __init__(self, n_assign: int, length: int, dim: int, device: torch.device | str = "cpu") -> None:
        self.embeddings = torch.zeros(n_assign, length, dim, device=device)
        self.filled = 0

    @property
    def length(self) -> int:
        return self.embeddings.shape[1]

    @property
    def full(self) -> bool:
        return self.length > 0 and self.filled >= self.length

    @torch.no_grad()
    def push(self, index: int, z: torch.Tensor) -> None:
        """Insert z (B, D) for assignment crop ``index`` at the front, dropping the oldest."""
        if self.length == 0:
            return
        b = min(z.shape[0], self.length)
        buf = self.embeddings[index]
        buf[b:] = buf[:-b].clone()
        buf[:b] = z[:b].detach().to(buf.dtype)
        if index == self.embeddings.shape[0] - 1:
            self.filled = min(self.length, self.filled + b)

    def state_dict(self) -> dict:
        return {"embeddings": self.embeddings.cpu(), "filled": self.filled}

    def load_state_dict(self, state: dict) -> None:
        if tuple(state["embeddings"].shape) != tuple(self.embeddings.shape):
            raise ValueError(
                f"queue shape in checkpoint {tuple(state['embeddings'].shape)} != configured "
                f"{tuple(self.embeddings.shape)}"
            )
        self.embeddings.copy_(state["embeddings"])
        self.filled = int(state["filled"])
