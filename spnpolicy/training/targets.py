"""Target networks: Polyak (soft) and hard parameter copies."""

from __future__ import annotations

import copy

import torch
from torch import nn

from factor_q import FactorGraph

__all__ = ["Polyak", "hard_update", "make_target", "soft_update"]


def make_target(net: nn.Module) -> nn.Module:
    """A frozen deep copy of ``net`` (no gradients), to be tracked by :func:`soft_update`.

    Immutable structure attributes (``FactorGraph``) are shared, not copied.
    """
    # FactorGraph refuses attribute assignment, so copy.deepcopy cannot rebuild it.
    shared = {id(value): value for module in net.modules() for value in vars(module).values()
              if isinstance(value, FactorGraph)}
    target = copy.deepcopy(net, memo=shared)
    target.requires_grad_(False)
    return target


class Polyak:
    """:func:`soft_update` of one ``(target, source)`` pair, their parameter and buffer lists
    collected once: ``polyak(tau)``. For a loop that updates the same pair every gradient
    step, so that the module trees are not walked at every step (on small networks the
    walk is most of a soft update's time). The modules must keep their tensors
    (``load_state_dict`` copies into them, so loading a checkpoint is fine)."""

    def __init__(self, target: nn.Module, source: nn.Module) -> None:
        self.target, self.source = list(target.parameters()), list(source.parameters())
        if len(self.target) != len(self.source):
            raise ValueError(f"target has {len(self.target)} parameters, source "
                             f"{len(self.source)}: not copies of one network")
        self.target_buffers, self.source_buffers = list(target.buffers()), list(source.buffers())
        if len(self.target_buffers) != len(self.source_buffers):
            raise ValueError(f"target has {len(self.target_buffers)} buffers, source "
                             f"{len(self.source_buffers)}: not copies of one network")

    @torch.no_grad()
    def __call__(self, tau: float) -> None:
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"tau must be in [0, 1], got {tau!r}")
        torch._foreach_lerp_(self.target, self.source, tau)
        for t, s in zip(self.target_buffers, self.source_buffers):
            t.copy_(s)


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """``target <- tau * source + (1 - tau) * target`` for every parameter; buffers are copied.

    ``tau = 1`` is a hard copy; ``tau = 0`` leaves the target unchanged.
    """
    Polyak(target, source)(tau)


def hard_update(target: nn.Module, source: nn.Module) -> None:
    """Copy ``source``'s parameters and buffers into ``target``."""
    soft_update(target, source, 1.0)
