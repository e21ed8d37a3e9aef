"""One optimiser step of a loss, shared by every algorithm of both training loops."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["gradient_step"]


def gradient_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor,
                  max_norm: float = 0.0) -> None:
    """Zero the gradients, backpropagate ``loss``, clip each parameter group's gradient norm
    to ``max_norm`` (0: no clipping) and step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if max_norm > 0:
        for group in optimizer.param_groups:
            nn.utils.clip_grad_norm_(group["params"], max_norm)
    optimizer.step()
