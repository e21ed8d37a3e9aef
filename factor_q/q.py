"""The factor-graph Q-network: state -> unary utilities and factor tables.

``FactorQ`` is the multilinear Q-function of docs/design.md, section 3, with a neural
``f_theta``: an MLP torso embeds the global state, a unary head gives ``[B, n, k]``
utilities and payoff heads give one table per factor.
It returns a :class:`factor_q.FactorValues`, on which Q is evaluated, maximised or
taken in expectation under a circuit policy. With ``ensemble=E`` it is ``E`` such
networks at once (twin critics), their values one ensemble :class:`FactorValues`.

Example::

    >>> import torch
    >>> from factor_q import FactorGraph, FactorQ
    >>> g = FactorGraph.random(num_agents=6, num_factors=20, order=2, seed=0)
    >>> q = FactorQ(g, state_dim=10, num_actions=6, hidden=(64, 64))
    >>> v = q(torch.randn(32, 10))
    >>> v.unary.shape, v.pairwise.shape
    (torch.Size([32, 6, 6]), torch.Size([32, 20, 6, 6]))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from factor_q.ensemble import EnsembleHead, EnsembleLinear
from factor_q.graph import FactorGraph
from factor_q.values import FactorValues, table_index

__all__ = ["FactorQ", "check_arguments", "check_ensemble", "check_state", "low_rank_table"]


def low_rank_table(factors: torch.Tensor) -> torch.Tensor:
    """``[B, F, order, rank, k]`` factor vectors -> ``[B, F, k, ...]`` sum of outer products."""
    order = factors.shape[2]
    table = factors[:, :, 0]
    for p in range(1, order):
        table = table.unsqueeze(-1) * factors[:, :, p].reshape(
            factors.shape[:2] + (factors.shape[3],) + (1,) * p + (factors.shape[4],))
    return table.sum(2)


def check_arguments(graph, input_dim, num_actions, hidden, unary, rank,
                    input_name: str = "state_dim",
                    graphs: tuple[type, ...] = (FactorGraph,)) -> tuple[int, ...]:
    """Validate a factor Q-network's arguments (ValueError/TypeError naming the argument;
    ``input_dim`` is called ``input_name``; ``graphs`` the graph types it takes); returns
    ``hidden`` as a tuple."""
    if not isinstance(graph, graphs):
        raise TypeError(f"graph must be a {' or '.join(g.__name__ for g in graphs)}, got "
                        f"{type(graph).__name__}")
    for name, value, low in ((input_name, input_dim, 1), ("num_actions", num_actions, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise ValueError(f"rank must be None or a positive int, got {rank!r}")
    hidden = tuple(hidden)
    if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
        raise ValueError(f"hidden must be a sequence of positive ints, got {hidden!r}")
    if not unary and graph.num_factors == 0:
        raise ValueError("unary=False with a graph without factors leaves Q identically 0")
    return hidden


def check_ensemble(ensemble) -> None:
    """ValueError unless ``ensemble`` is ``None`` or a positive int."""
    if ensemble is not None and (isinstance(ensemble, bool) or not isinstance(ensemble, int)
                                 or ensemble < 1):
        raise ValueError(f"ensemble must be None or a positive int, got {ensemble!r}")


def check_state(state: torch.Tensor, state_dim: int) -> None:
    """TypeError/ValueError unless ``state`` is a finite floating-point ``[B, state_dim]``."""
    if not isinstance(state, torch.Tensor) or not state.is_floating_point():
        raise TypeError(f"state must be a floating-point tensor [B, {state_dim}], got "
                        f"{getattr(state, 'dtype', type(state).__name__)}")
    if state.dim() != 2 or state.shape[1] != state_dim:
        raise ValueError(f"state must have shape [B, state_dim={state_dim}], "
                         f"got {list(state.shape)}")
    if not torch.isfinite(state).all():
        raise ValueError("state contains NaN or infinite values")


class FactorQ(nn.Module):
    """Multilinear factor-graph Q-function ``Q(s, u)`` over ``n`` agents with ``k`` actions.

    Args:
        graph: the factor graph (factors of order 2 and/or 3).
        state_dim: size of the global state vector.
        num_actions: actions per agent, ``k``.
        hidden: widths of the state MLP (ReLU); ``()`` feeds the state to the heads directly.
        unary: include per-agent utilities ``unary_i(s)[u_i]``.
        rank: if given, each factor table is a sum of ``rank`` outer products of
            per-agent vectors (CP rank <= rank): ``rank * order * k`` outputs per factor
            instead of ``k ** order``.
        ensemble: ``E`` independently initialised Q-functions on the graph (spn-ac's twin
            critics: 2), every layer of theirs one batched matmul
            (:mod:`factor_q.ensemble`); ``None`` (default) for one.

    Every factor has its own output head (the ``f_theta^(i)`` of docs/design.md, section
    3) and the unary head is an ``n * k`` linear layer; :class:`~factor_q.AgentFactorQ`
    shares one of each by every agent and factor instead.

    ``forward(state)`` takes ``[B, state_dim]`` and returns a :class:`FactorValues` with
    ``unary`` ``[B, n, k]`` (zeros if ``unary=False``), ``pairwise`` ``[B, F2, k, k]`` and
    ``triple`` ``[B, F3, k, k, k]``; with ``ensemble=E`` each has a leading axis ``E``.
    """

    def __init__(self, graph: FactorGraph, state_dim: int, num_actions: int,
                 hidden: Sequence[int] = (128, 128), unary: bool = True,
                 rank: int | None = None, ensemble: int | None = None):
        super().__init__()
        hidden = check_arguments(graph, state_dim, num_actions, hidden, unary, rank)
        check_ensemble(ensemble)
        self.graph, self.state_dim, self.num_actions = graph, state_dim, num_actions
        self.rank, self.ensemble = rank, ensemble

        def linear(in_dim: int, out_dim: int) -> nn.Module:
            return (nn.Linear(in_dim, out_dim) if ensemble is None
                    else EnsembleLinear(ensemble, in_dim, out_dim))

        layers: list[nn.Module] = []
        width = state_dim
        for h in hidden:
            layers += [linear(width, h), nn.ReLU()]
            width = h
        self.torso = nn.Sequential(*layers)
        n, k = graph.num_agents, num_actions
        self.unary_head = linear(width, n * k) if unary else None
        self.payoff = nn.ModuleDict()
        for order in graph.orders:
            scopes = torch.tensor(graph.scopes(order), dtype=torch.long)
            self.register_buffer(f"scopes{order}", scopes, persistent=False)
            per_factor = k**order if rank is None else order * rank * k
            if ensemble is None:
                self.payoff[str(order)] = nn.Linear(width, len(scopes) * per_factor)
            else:
                self.payoff[str(order)] = EnsembleHead(ensemble, width, len(scopes) * per_factor)
                # each factor's first output column, for evaluate's picked outputs
                self.register_buffer(f"offsets{order}", torch.arange(len(scopes)) * k**order,
                                     persistent=False)

    def forward(self, state: torch.Tensor) -> FactorValues:
        check_state(state, self.state_dim)
        return self.values(state)

    def values(self, state: torch.Tensor) -> FactorValues:
        """:meth:`forward` without the check of ``state`` (for states a training loop
        already holds: replayed float ``[B, state_dim]`` rows of the environment's)."""
        h = self._embed(state)
        lead = () if self.ensemble is None else (self.ensemble,)
        batch, n, k = state.shape[0], self.graph.num_agents, self.num_actions
        unary = None if self.unary_head is None else self.unary_head(h).view(*lead, batch, n, k)
        tables = {}
        for key, head in self.payoff.items():
            order = int(key)
            scopes = getattr(self, f"scopes{order}")
            shape = lead + (batch, len(scopes)) + (k,) * order
            if self.rank is None:
                tables[order] = head(h).view(shape)
            else:
                vectors = head(h).view(-1, len(scopes), order, self.rank, k)
                tables[order] = low_rank_table(vectors).view(shape)
        return FactorValues.trusted(self.graph, unary, tables.get(2), tables.get(3))

    def evaluate(self, state: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``Q(s, u)`` ``[B]`` (``[E, B]`` for an ensemble) for states ``[B, state_dim]``
        (unchecked, as :meth:`values`) and joint actions ``[B, n]``: equal to
        ``values(state).evaluate(actions)``. An ensemble with full tables computes only
        the payoff outputs that ``u`` picks (:meth:`~factor_q.ensemble.EnsembleHead.picked`),
        not the tables."""
        if self.ensemble is None or self.rank is not None:
            return self.values(state).evaluate(actions)
        h = self._embed(state)
        members, batch = self.ensemble, state.shape[0]
        if self.unary_head is None:
            q = h.new_zeros(members, batch)
        else:
            index = actions[None, :, :, None].expand(members, -1, -1, 1)
            q = self.unary_head(h).view(members, batch, self.graph.num_agents,
                                        self.num_actions).gather(3, index).squeeze(-1).sum(-1)
        for key, head in self.payoff.items():
            order = int(key)
            columns = table_index(actions, getattr(self, f"scopes{order}"), self.num_actions)
            q = q + head.picked(h, columns + getattr(self, f"offsets{order}"))
        return q

    def _embed(self, state: torch.Tensor) -> torch.Tensor:
        """The torso's output ``[B, H]`` (``[E, B, H]`` for an ensemble)."""
        if self.ensemble is not None and not len(self.torso):
            return state.expand(self.ensemble, -1, -1)
        return self.torso(state)

    def extra_repr(self) -> str:
        return (f"agents={self.graph.num_agents}, factors={self.graph.num_factors}, "
                f"actions={self.num_actions}, rank={self.rank}"
                + ("" if self.ensemble is None else f", ensemble={self.ensemble}"))
