"""Critics of the actor-critic family: factor graphs by name and twin FactorQ networks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from factor_q import FactorGraph, FactorQ, FactorValues

__all__ = ["FACTOR_GRAPHS", "TwinFactorQ", "build_factor_graph"]

FACTOR_GRAPHS = ("auto", "complete", "random", "line", "ring", "star", "none")


def build_factor_graph(kind: str, num_agents: int, num_factors: int = 20, order: int = 2,
                       seed: int = 0) -> FactorGraph:
    """The critic's factor graph over ``num_agents`` agents.

    ``auto``: seed 000's ``FactorGraph.random(n, num_factors, order, seed)`` when that many
    factors exist (ordered scopes; 20 pairs for 6 agents), else the complete graph (every set
    of ``order`` agents; 2-agent games get their single pair). ``random`` always the former,
    ``line`` / ``ring`` / ``star`` pairwise, ``none`` no factors (unary terms only).
    """
    if kind not in FACTOR_GRAPHS:
        raise ValueError(f"factor_graph must be one of {FACTOR_GRAPHS}, got {kind!r}")
    if kind == "auto":
        kind = "random" if num_factors <= math.perm(num_agents, order) else "complete"
    if kind == "random":
        return FactorGraph.random(num_agents, num_factors, order=order, seed=seed)
    if kind == "complete":
        return FactorGraph.complete(num_agents, order=order)
    if kind == "none":
        return FactorGraph(num_agents, [])
    return getattr(FactorGraph, kind)(num_agents)


class TwinFactorQ(nn.Module):
    """Two independently initialised :class:`~factor_q.FactorQ` critics on one graph.

    ``forward(state [B, S])`` returns a list of two :class:`~factor_q.FactorValues`.
    Arguments are ``FactorQ``'s (``rank=None`` for full tables).
    """

    def __init__(self, graph: FactorGraph, state_dim: int, num_actions: int,
                 hidden: Sequence[int] = (128, 128), unary: bool = True, rank: int | None = None):
        super().__init__()
        self.critics = nn.ModuleList(FactorQ(graph, state_dim, num_actions, hidden=tuple(hidden),
                                             unary=unary, rank=rank) for _ in range(2))

    def forward(self, state: torch.Tensor) -> list[FactorValues]:
        return [critic(state) for critic in self.critics]
