"""Critics of the actor-critic family: factor graphs by name and twin FactorQ networks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from factor_q import FactorGraph, FactorValues
from factor_q.q import check_arguments, check_state, low_rank_table

__all__ = ["FACTOR_GRAPHS", "TwinFactorQ", "TwinValues", "build_factor_graph", "expectations"]

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


class _TwinLinear(nn.Module):
    """Two independent ``nn.Linear(in_dim, out_dim)`` as one batched matmul:
    ``[2, B, in_dim]`` (or ``[B, in_dim]``, fed to both) -> ``[2, B, out_dim]``."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's default initialisation
        self.weight = nn.Parameter(torch.empty(2, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(2, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return torch.baddbmm(self.bias, x.expand(2, -1, -1), self.weight)
        return torch.baddbmm(self.bias, x, self.weight)


class TwinValues(list):
    """The two critics' :class:`~factor_q.FactorValues` (a list of two), with their tensors
    also kept stacked (``unary [2, B, n, k]``, ``tables {order: [2, B, F, k, ...]}``) so
    that both expectations under one policy are one set of ops (:meth:`expectations`)."""

    def __init__(self, values: list[FactorValues], unary: torch.Tensor | None,
                 tables: dict[int, torch.Tensor]):
        super().__init__(values)
        self.unary, self.tables = unary, tables

    def expectations(self, dist) -> torch.Tensor:
        """``[E_dist[Q_1], E_dist[Q_2]]`` ``[2, B]``, each equal to
        :meth:`FactorValues.expectation` (``dist`` with batch shape ``[B]``)."""
        first = self[0]
        n, k, batch = first.graph.num_agents, first.num_actions, first.batch_size
        marg = dist.marginals()
        if tuple(marg.shape) != (batch, n, k):
            return torch.stack([v.expectation(dist) for v in self])
        unary = self.unary if self.unary is not None else first.unary[None]
        result = (marg * unary).sum((-2, -1)).expand(2, batch)
        for scopes, _ in first.groups():
            joint = dist.scope_marginals(list(scopes))
            result = result + (joint * self.tables[len(scopes[0])]).flatten(2).sum(-1)
        return result


    def evaluate(self, actions: torch.Tensor) -> torch.Tensor:
        """``[Q_1(s, u), Q_2(s, u)]`` ``[2, B]`` for joint actions ``[B, n]``, each equal to
        :meth:`FactorValues.evaluate` (checked once, one gather per factor order)."""
        first = self[0]
        actions = first._check_actions(actions)
        k, batch = first.num_actions, first.batch_size
        if self.unary is None:
            q = actions.new_zeros((2, batch), dtype=first.unary.dtype)
        else:
            index = actions[None, :, :, None].expand(2, -1, -1, 1)
            q = self.unary.gather(3, index).squeeze(-1).sum(-1)
        for scopes, _ in first.groups():
            picked = actions[:, first._scope_index(scopes)]     # [B, F, order]
            flat = picked[..., 0]
            for p in range(1, picked.shape[-1]):
                flat = flat * k + picked[..., p]
            index = flat[None, :, :, None].expand(2, -1, -1, 1)
            q = q + self.tables[len(scopes[0])].flatten(3).gather(3, index).squeeze(-1).sum(-1)
        return q


def expectations(values, dist) -> torch.Tensor:
    """``E_dist[Q_j]`` of every critic in ``values`` stacked ``[J, B]`` (one set of ops for
    a :class:`TwinValues`)."""
    if isinstance(values, TwinValues):
        return values.expectations(dist)
    return torch.stack([v.expectation(dist) for v in values])


class TwinFactorQ(nn.Module):
    """Two independently initialised factor-graph critics on one graph, computed together.

    Each critic is a :class:`~factor_q.FactorQ` with one output head per factor order
    (``share_params=False``): a ReLU MLP torso, a unary head and per-order payoff heads,
    full tables or CP rank ``rank``. The two critics' layers are stacked into batched
    matmuls (half the ops and parameter tensors of two separate networks), so
    ``forward(state [B, S])`` returns a list of two :class:`~factor_q.FactorValues` (a
    :class:`TwinValues`, whose ``expectations`` takes both at once).
    """

    def __init__(self, graph: FactorGraph, state_dim: int, num_actions: int,
                 hidden: Sequence[int] = (128, 128), unary: bool = True, rank: int | None = None):
        super().__init__()
        hidden = check_arguments(graph, state_dim, num_actions, hidden, unary, rank)
        self.graph, self.state_dim, self.num_actions, self.rank = graph, state_dim, num_actions, rank
        layers: list[nn.Module] = []
        width = state_dim
        for h in hidden:
            layers += [_TwinLinear(width, h), nn.ReLU()]
            width = h
        self.torso = nn.Sequential(*layers)
        n, k = graph.num_agents, num_actions
        self.unary_head = _TwinLinear(width, n * k) if unary else None
        self.payoff = nn.ModuleDict()
        for order in graph.orders:
            per_factor = k**order if rank is None else order * rank * k
            self.payoff[str(order)] = _TwinLinear(width, len(graph.scopes(order)) * per_factor)

    def forward(self, state: torch.Tensor) -> TwinValues:
        check_state(state, self.state_dim)
        return self.values(state)

    def values(self, state: torch.Tensor) -> TwinValues:
        """:meth:`forward` without the check of ``state`` (for states the training loop
        already holds: replayed float32 ``[B, state_dim]`` rows of the environment's)."""
        h = self.torso(state) if len(self.torso) else state.expand(2, -1, -1)
        batch, n, k = state.shape[0], self.graph.num_agents, self.num_actions
        unary = (None if self.unary_head is None
                 else self.unary_head(h).view(2, batch, n, k))
        tables = {}
        for key, head in self.payoff.items():
            order, factors = int(key), len(self.graph.scopes(int(key)))
            if self.rank is None:
                tables[order] = head(h).view((2, batch, factors) + (k,) * order)
            else:
                vectors = head(h).view(2 * batch, factors, order, self.rank, k)
                tables[order] = low_rank_table(vectors).view(
                    (2, batch, factors) + (k,) * order)
        return TwinValues([FactorValues.trusted(self.graph, None if unary is None else unary[j],
                                                tables[2][j] if 2 in tables else None,
                                                tables[3][j] if 3 in tables else None)
                           for j in range(2)], unary, tables)
