"""The factor-graph Q-network on per-agent inputs, its networks shared by every agent and
every factor (Deep Coordination Graphs' utilities and payoffs).

Each agent ``i`` is embedded from its own input (an observation), a one-hot of its id
(unless ``agent_ids=False``) and, when ``state_dim > 0``, an embedding of the global state:
``h_i = MLP([x_i, onehot(i), g(s)])`` ``[B, n, H]``. The utilities are one linear head,
``unary_i = U h_i`` ``[B, n, k]``; a factor's table is one payoff head (linear, or with one
ReLU layer: ``payoff_hidden``) on its agents' embeddings in scope order, averaged over the
scope's orderings (each mapped back to the scope's axis order), so it does not depend on
how the scope is listed: ``table_ij = (P[h_i, h_j] + P[h_j, h_i]^T) / 2`` ``[B, k, k]``
(order 3: the six orderings).
With ``rank=r`` a table is ``sum_r prod_p v_pr`` instead, agent ``a``'s vectors one linear
head on ``[h_a, sum of the factor's other h]``: symmetric by construction.
With ``centred=True`` every table is centred along each of its axes in turn (every row and
column mean zero, for order 2), so that it holds only how its agents' actions combine: what
one agent's action is worth by itself lives in its utility alone.
The parameter count does not grow with the number of factors, and grows with the number
of agents only through the one-hot id (not at all with ``agent_ids=False``: the same
weights fit every team size). What one factor learns (a joint action that pays where its
agents see something) every factor with the same inputs shares.

Returns a :class:`factor_q.FactorValues`, on which Q is evaluated, maximised or taken in
expectation under a circuit policy; ``ensemble=E`` is ``E`` such networks at once.

On a :class:`factor_q.NearestGraph` the pairs are chosen per state from the agents'
positions (``positions`` ``[B, n, d]``, given to every call): each agent with its nearest
others, the same payoff head on each pair, and a zero table for a mutual pair's second
slot.

Example::

    >>> import torch
    >>> from factor_q import AgentFactorQ, FactorGraph
    >>> q = AgentFactorQ(FactorGraph.complete(4), input_dim=10, num_actions=3, hidden=(32,))
    >>> v = q(torch.randn(5, 4, 10))
    >>> v.unary.shape, v.pairwise.shape
    (torch.Size([5, 4, 3]), torch.Size([5, 6, 3, 3]))
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from factor_q.ensemble import EnsembleLinear
from factor_q.graph import FactorGraph, NearestGraph
from factor_q.q import check_arguments, check_ensemble, check_state, low_rank_table
from factor_q.values import FactorValues

__all__ = ["AgentFactorQ"]


class AgentFactorQ(nn.Module):
    """Multilinear factor-graph ``Q(s, u)`` from per-agent inputs ``[B, n, input_dim]``.

    Args:
        graph: the factor graph (factors of order 2 and/or 3), or a ``NearestGraph``
            (pairs chosen per state by position).
        input_dim: size of one agent's input ``x_i``.
        num_actions: actions per agent, ``k``.
        hidden: widths of the shared agent MLP (ReLU, at least one layer).
        unary: include per-agent utilities.
        state_dim: size of a global state fed to every agent's embedding through one
            ReLU layer of ``hidden[0]`` units; 0 (default) for none.
        rank: if given, each factor table is a sum of ``rank`` outer products of
            per-position vectors (CP rank <= rank), position ``p``'s vectors ``[rank, k]``
            one linear head on ``[h_a, sum of the other agents' h]`` (``a`` the agent at
            ``p``), shared by every position and every factor of the order: symmetric by
            construction, with ``rank * k`` head outputs instead of ``k ** order``.
        payoff_hidden: 0 (default) for the linear payoff head of Deep Coordination Graphs;
            ``> 0`` for a head with one ReLU layer of that many units on the factor's
            embeddings, so that a table can depend on how its agents' inputs combine
            (whether two agents see the same thing), not only on their sum.
        ensemble: ``E`` independently initialised networks (twin critics: 2); ``None``
            (default) for one.
        agent_ids: append a one-hot of each agent's id to its input (default); ``False``
            for none, so that agents with equal inputs get equal embeddings and the weights
            do not depend on the number of agents.
        centred: centre every factor table along each of its axes (the interaction part
            of an analysis of variance: each agent's main effect is left to its utility);
            needs ``unary``. Default ``False``.

    ``forward(inputs, state=None, positions=None)`` returns a :class:`FactorValues` with
    ``unary`` ``[B, n, k]``, ``pairwise`` ``[B, F2, k, k]``, ``triple`` ``[B, F3, k, k,
    k]``; with ``ensemble=E`` each has a leading axis ``E``. ``positions`` ``[B, n, d]``
    (the agents' positions) is needed on a ``NearestGraph`` and refused otherwise.
    """

    def __init__(self, graph: FactorGraph | NearestGraph, input_dim: int, num_actions: int,
                 hidden: Sequence[int] = (64, 64), unary: bool = True, state_dim: int = 0,
                 rank: int | None = None, payoff_hidden: int = 0,
                 ensemble: int | None = None, agent_ids: bool = True,
                 centred: bool = False) -> None:
        super().__init__()
        if not isinstance(agent_ids, bool):
            raise ValueError(f"agent_ids must be True or False, got {agent_ids!r}")
        if not isinstance(centred, bool):
            raise ValueError(f"centred must be True or False, got {centred!r}")
        if centred and not unary:
            raise ValueError("centred=True leaves each agent's own effect to its utility: "
                             "it needs unary=True")
        self.centred = centred
        hidden = check_arguments(graph, input_dim, num_actions, hidden, unary, rank,
                                 input_name="input_dim", graphs=(FactorGraph, NearestGraph))
        if not hidden:
            raise ValueError("hidden must have at least one layer, got ()")
        self.local = isinstance(graph, NearestGraph)
        if isinstance(state_dim, bool) or not isinstance(state_dim, int) or state_dim < 0:
            raise ValueError(f"state_dim must be an int >= 0, got {state_dim!r}")
        check_ensemble(ensemble)
        if isinstance(payoff_hidden, bool) or not isinstance(payoff_hidden, int) \
                or payoff_hidden < 0:
            raise ValueError(f"payoff_hidden must be an int >= 0, got {payoff_hidden!r}")
        self.payoff_hidden = payoff_hidden
        self.graph, self.input_dim, self.num_actions = graph, input_dim, num_actions
        self.state_dim, self.rank, self.ensemble = state_dim, rank, ensemble
        n, k = graph.num_agents, num_actions

        def linear(in_dim: int, out_dim: int) -> nn.Module:
            return (nn.Linear(in_dim, out_dim) if ensemble is None
                    else EnsembleLinear(ensemble, in_dim, out_dim))

        self.state_in = linear(state_dim, hidden[0]) if state_dim else None
        layers: list[nn.Module] = []
        width = input_dim + (n if agent_ids else 0) + (hidden[0] if state_dim else 0)
        for h in hidden:
            layers += [linear(width, h), nn.ReLU()]
            width = h
        self.torso = nn.Sequential(*layers)
        self.unary_head = linear(width, k) if unary else None
        # per order: the layer on the factor's embeddings (k**order outputs, rank * k for
        # low-rank vectors, or payoff_hidden units and then payoff_out)
        outputs = {order: k**order if rank is None else rank * k for order in graph.orders}
        inputs = {order: order * width if rank is None else 2 * width for order in graph.orders}
        self.payoff = nn.ModuleDict({str(o): linear(inputs[o], payoff_hidden or outputs[o])
                                     for o in graph.orders})
        self.payoff_out = nn.ModuleDict({str(o): linear(payoff_hidden, outputs[o])
                                         for o in graph.orders} if payoff_hidden else {})
        for order in () if self.local else graph.orders:
            self.register_buffer(f"scopes{order}",
                                 torch.tensor(graph.scopes(order), dtype=torch.long),
                                 persistent=False)
        self.register_buffer("agent_ids", torch.eye(n) if agent_ids else None,
                             persistent=False)

    def forward(self, inputs: torch.Tensor, state: torch.Tensor | None = None,
                positions: torch.Tensor | None = None) -> FactorValues:
        n = self.graph.num_agents
        if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():
            raise TypeError(f"inputs must be a floating-point tensor [B, {n}, "
                            f"{self.input_dim}], got {getattr(inputs, 'dtype', type(inputs))}")
        if inputs.dim() != 3 or tuple(inputs.shape[1:]) != (n, self.input_dim):
            raise ValueError(f"inputs must have shape [B, num_agents={n}, "
                             f"input_dim={self.input_dim}], got {list(inputs.shape)}")
        if not torch.isfinite(inputs).all():
            raise ValueError("inputs contain NaN or infinite values")
        if self.state_dim:
            if state is None:
                raise ValueError(f"this AgentFactorQ reads a global state [B, {self.state_dim}]"
                                 f" too (state_dim={self.state_dim}); got state=None")
            check_state(state, self.state_dim)
            if state.shape[0] != inputs.shape[0]:
                raise ValueError(f"state has {state.shape[0]} rows, inputs {inputs.shape[0]}")
        elif state is not None:
            raise ValueError("state given, but this AgentFactorQ has state_dim=0")
        if self.local:
            if not isinstance(positions, torch.Tensor) or not positions.is_floating_point() \
                    or positions.dim() != 3 or positions.shape[:2] != inputs.shape[:2]:
                got = (list(positions.shape) if isinstance(positions, torch.Tensor)
                       else type(positions).__name__)
                raise ValueError(f"this AgentFactorQ chooses its pairs by position "
                                 f"({self.graph!r}): positions must be a floating-point "
                                 f"tensor [B={inputs.shape[0]}, {n}, d], got {got}")
        elif positions is not None:
            raise ValueError(f"positions given, but this AgentFactorQ's graph is fixed "
                             f"({self.graph.num_factors} factors)")
        return self.values(inputs, state, positions)

    def values(self, inputs: torch.Tensor, state: torch.Tensor | None = None,
               positions: torch.Tensor | None = None) -> FactorValues:
        """:meth:`forward` without the input checks (for a training loop's own replayed
        rows)."""
        h = self._embed(inputs, state)                                  # [(E,) B, n, H]
        unary = None if self.unary_head is None else self._rows(self.unary_head, h)
        if self.local:
            scopes, kept = self.graph.scopes(positions)                 # [B, F, 2], [B, F]
            tables = self._tables("2", h, scopes) * kept.to(h.dtype)[..., None, None]
            return FactorValues.trusted(self.graph, unary, tables, None, scopes)
        tables = {int(key): self._tables(key, h, getattr(self, f"scopes{key}"))
                  for key in self.payoff}
        return FactorValues.trusted(self.graph, unary, tables.get(2), tables.get(3))

    def _tables(self, key: str, h: torch.Tensor, scopes: torch.Tensor) -> torch.Tensor:
        tables = (self._full_tables(key, h, scopes) if self.rank is None
                  else self._low_rank_tables(key, h, scopes))
        if self.centred:                                    # [(E,) B, F, k, ...]
            for axis in range(-int(key), 0):
                tables = tables - tables.mean(axis, keepdim=True)
        return tables

    @staticmethod
    def _select(x: torch.Tensor, agents: torch.Tensor) -> torch.Tensor:
        """Rows of ``x`` ``[(E,) B, n, D]`` at ``agents`` ``[F]``, or per state ``[B, F]``
        -> ``[(E,) B, F, D]``."""
        if agents.dim() == 1:
            return x.index_select(x.dim() - 2, agents)
        index = agents[..., None].expand(*x.shape[:-2], agents.shape[-1], x.shape[-1])
        return x.gather(-2, index)

    def _full_tables(self, key: str, h: torch.Tensor, scopes: torch.Tensor) -> torch.Tensor:
        """Tables ``[(E,) B, F, k, ...]`` of the factors ``scopes`` ``[F, order]`` (or per
        state ``[B, F, order]``): the head on the scope's embeddings in each ordering,
        mapped back to scope order, averaged."""
        order, k = scopes.shape[-1], self.num_actions
        # the first layer is linear in the concatenation [h_a, h_b, ...], so each scope
        # position's part is one projection per agent, gathered per factor
        parts = self._projections(self.payoff[key], h, order)           # [o, (E,) B, n, .]
        total = None
        for perm in itertools.permutations(range(order)):
            flat = self._head_out(key, sum(self._select(parts[p], scopes[..., perm[p]])
                                           for p in range(order)))      # [(E,) B, F, k^o]
            table = flat.unflatten(-1, (k,) * order)                    # axis p: perm[p]'s
            lead = table.dim() - order
            table = table.permute(*range(lead), *(lead + perm.index(p) for p in range(order)))
            total = table if total is None else total + table
        return total / math.factorial(order)

    def _head_out(self, key: str, pre: torch.Tensor) -> torch.Tensor:
        """The payoff head's output ``[(E,) B, F, out]`` from its first layer's weighted sum
        without bias ``pre``: plus the bias, then (``payoff_hidden``) ReLU and the output
        layer."""
        first = self.payoff[key]
        bias = first.bias if self.ensemble is None else first.bias.unsqueeze(1)
        pre = pre + bias
        if not self.payoff_hidden:
            return pre
        return self._rows(self.payoff_out[key], torch.relu(pre))

    def _low_rank_tables(self, key: str, h: torch.Tensor,
                         scopes: torch.Tensor) -> torch.Tensor:
        """Tables ``[(E,) B, F, k, ...]`` of the factors ``scopes`` ``[F, order]`` (or per
        state ``[B, F, order]``), each ``sum_r prod_p v_pr[u_p]``: position ``p``'s vectors
        ``v_p`` ``[rank, k]`` are the head on ``[h_a, sum of the scope's other h]`` (``a``
        the agent at ``p``)."""
        count, order = scopes.shape[-2:]
        k, rank = self.num_actions, self.rank
        # the first layer is linear: own and others' parts are one projection per agent each
        own, other = (self._select(part, scopes.flatten(-2)).unflatten(-2, (count, order))
                      for part in self._projections(self.payoff[key], h, 2))  # [.., F, o, .]
        pre = own + other.sum(-2, keepdim=True) - other
        vectors = self._head_out(key, pre.flatten(-3, -2)).unflatten(-2, (count, order))
        batch = vectors.shape[:-3]                                      # [(E,) B]
        tables = low_rank_table(vectors.reshape(-1, count, order, rank, k))
        return tables.view(*batch, count, *(k,) * order)

    def _projections(self, head: nn.Module, h: torch.Tensor, parts: int) -> torch.Tensor:
        """``[parts, (E,) B, n, out]``: each agent's embedding through the part of the
        payoff head's first layer that reads input block ``p`` (the layer reads ``parts``
        concatenated embeddings; no bias)."""
        width = h.shape[-1]
        if self.ensemble is None:
            weight = head.weight.t().reshape(parts, width, -1)          # [o, H, K]
            return torch.einsum("bnh,phk->pbnk", h, weight)
        weight = head.weight.view(self.ensemble, parts, width, -1)      # [E, o, H, K]
        return torch.einsum("ebnh,ephk->pebnk", h, weight)

    def evaluate(self, inputs: torch.Tensor, actions: torch.Tensor,
                 state: torch.Tensor | None = None,
                 positions: torch.Tensor | None = None) -> torch.Tensor:
        """``Q(s, u)`` ``[B]`` (``[E, B]`` for an ensemble) for joint actions ``[B, n]``."""
        return self.values(inputs, state, positions).evaluate(actions)

    def _embed(self, inputs: torch.Tensor, state: torch.Tensor | None) -> torch.Tensor:
        """Agent embeddings ``[B, n, H]`` (``[E, B, n, H]`` for an ensemble)."""
        batch, n = inputs.shape[:2]
        x = inputs                                                      # [B, n, d]
        if self.agent_ids is not None:
            x = torch.cat([x, self.agent_ids.expand(batch, -1, -1)], -1)  # [B, n, d + n]
        if self.ensemble is not None:
            x = x.expand(self.ensemble, -1, -1, -1)
        if self.state_in is not None:
            g = torch.relu(self.state_in(state))                        # [(E,) B, H0]
            x = torch.cat([x, g.unsqueeze(-2).expand(*g.shape[:-1], n, g.shape[-1])], -1)
        return self._rows(self.torso, x)

    def _rows(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``module`` on the last axis of ``x`` ``[(E,) ..., d]``; ensemble layers take
        ``[E, rows, d]``."""
        if self.ensemble is None:
            return module(x)
        shape = x.shape
        out = module(x.reshape(shape[0], -1, shape[-1]))
        return out.view(*shape[:-1], out.shape[-1])

    def extra_repr(self) -> str:
        return (f"agents={self.graph.num_agents}, factors={self.graph.num_factors}"
                f"{' per state' if self.local else ''}, "
                f"actions={self.num_actions}, input_dim={self.input_dim}, "
                f"state_dim={self.state_dim}, rank={self.rank}, "
                f"payoff_hidden={self.payoff_hidden}"
                + ("" if self.ensemble is None else f", ensemble={self.ensemble}")
                + ("" if self.agent_ids is not None else ", agent_ids=False")
                + (", centred=True" if self.centred else ""))

