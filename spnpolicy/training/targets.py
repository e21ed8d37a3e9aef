"""Target networks: Polyak (soft) and hard parameter copies."""

from __future__ import annotations

import copy

import torch
from torch import nn

from factor_q import FactorGraph

__all__ = ["hard_update", "make_target", "soft_update"]


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


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """``target <- tau * source + (1 - tau) * target`` for every parameter; buffers are copied.

    ``tau = 1`` is a hard copy; ``tau = 0`` leaves the target unchanged.
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must be in [0, 1], got {tau!r}")
    target_params, source_params = list(target.parameters()), list(source.parameters())
    if len(target_params) != len(source_params):
        raise ValueError(f"target has {len(target_params)} parameters, source "
                         f"{len(source_params)}: not copies of one network")
    torch._foreach_lerp_(target_params, source_params, tau)
    for t, s in zip(target.buffers(), source.buffers(), strict=True):
        t.copy_(s)


def hard_update(target: nn.Module, source: nn.Module) -> None:
    """Copy ``source``'s parameters and buffers into ``target``."""
    soft_update(target, source, 1.0)
