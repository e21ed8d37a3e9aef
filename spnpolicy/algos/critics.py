"""Critics of the actor-critic family: factor graphs by name and twin FactorQ networks."""

from __future__ import annotations

import math
from collections.abc import Sequence

from factor_q import FactorGraph, FactorQ, NearestGraph

__all__ = ["FACTOR_GRAPHS", "TwinFactorQ", "build_factor_graph"]

FACTOR_GRAPHS = ("auto", "complete", "random", "line", "ring", "star", "none", "nearest")


def build_factor_graph(kind: str, num_agents: int, num_factors: int = 20, order: int = 2,
                       seed: int = 0, neighbours: int = 2) -> FactorGraph | NearestGraph:
    """The critic's factor graph over ``num_agents`` agents.

    ``auto``: ``FactorGraph.random(n, num_factors, order, seed)`` when that many
    factors exist (ordered scopes; 20 pairs for 6 agents), else the complete graph (every set
    of ``order`` agents; 2-agent games get their single pair). ``random`` always the former,
    ``line`` / ``ring`` / ``star`` pairwise, ``none`` no factors (unary terms only),
    ``nearest`` a ``NearestGraph(n, neighbours)`` (pairs chosen per state by position).
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
    if kind == "nearest":
        if order != 2:
            raise ValueError(f"factor_graph='nearest' has pairwise factors; got order={order}")
        return NearestGraph(num_agents, neighbours)
    return getattr(FactorGraph, kind)(num_agents)


class TwinFactorQ(FactorQ):
    """Twin factor-graph critics: a :class:`~factor_q.FactorQ` with ``ensemble=2``, two
    independently initialised critics on one graph whose values are one ensemble
    :class:`~factor_q.FactorValues` (``[2, B]`` queries, ``min_expectation``, ``mean``)."""

    def __init__(self, graph: FactorGraph, state_dim: int, num_actions: int,
                 hidden: Sequence[int] = (128, 128), unary: bool = True,
                 rank: int | None = None) -> None:
        super().__init__(graph, state_dim, num_actions, hidden, unary, rank, ensemble=2)
