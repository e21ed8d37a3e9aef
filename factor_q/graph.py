"""Factor graphs over agents: which groups of agents' actions interact in the Q-function.

A :class:`FactorGraph` is an immutable list of factors, each a tuple of 2 or 3 distinct
agent indices (its scope). The order inside a scope is the axis order of that factor's
table. The graph wraps :mod:`networkx` for conversion and elimination orders; it holds no
tensors.

Example::

    >>> from factor_q import FactorGraph
    >>> g = FactorGraph(num_agents=4, factors=[(0, 2), (1, 2), (0, 3), (1, 3)])
    >>> g.num_factors, g.orders
    (4, (2,))
    >>> FactorGraph.random(num_agents=6, num_factors=20, order=2, seed=0).num_factors
    20

A :class:`NearestGraph` chooses pairwise factors per state instead: each agent with its
nearest others by position, so its scopes are a tensor ``[B, F, 2]`` rather than a list.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence

import networkx as nx
import numpy as np
import torch

__all__ = ["FactorGraph", "NearestGraph"]

_ORDERS = (2, 3)


def _check_count(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_order(order) -> int:
    if order not in _ORDERS or isinstance(order, bool):
        raise ValueError(f"order must be 2 or 3, got {order!r}")
    return int(order)


class FactorGraph:
    """An immutable factor graph over ``num_agents`` agents.

    Args:
        num_agents: number of agents n (>= 1).
        factors: scopes, each a sequence of 2 or 3 distinct agent indices in ``range(n)``.
            Orders may be mixed. A scope may not be repeated (merge the two tables
            instead); the same agents in another order is a different factor.

    Raises:
        ValueError: naming the offending factor (index out of range, repeated agent,
            order not 2 or 3, repeated factor).
    """

    __slots__ = ("_num_agents", "_factors")

    def __init__(self, num_agents: int, factors: Iterable[Sequence[int]]):
        n = _check_count(num_agents, "num_agents", 1)
        try:
            raw = [tuple(f) for f in factors]
        except TypeError:
            raise ValueError(f"factors must be a sequence of agent-index tuples, "
                             f"got {factors!r}") from None
        seen: dict[tuple[int, ...], int] = {}
        checked = []
        for j, scope in enumerate(raw):
            if len(scope) not in _ORDERS:
                raise ValueError(f"factor {j} {scope}: order must be 2 or 3, got {len(scope)}")
            for a in scope:
                if isinstance(a, bool) or not isinstance(a, (int, np.integer)) or not 0 <= a < n:
                    raise ValueError(f"factor {j} {scope}: agent index {a!r} is out of "
                                     f"range(num_agents={n})")
            scope = tuple(int(a) for a in scope)
            if len(set(scope)) != len(scope):
                raise ValueError(f"factor {j} {scope}: repeated agent in a factor")
            if scope in seen:
                raise ValueError(f"factor {j} {scope}: repeats factor {seen[scope]}; "
                                 f"merge their tables instead")
            seen[scope] = j
            checked.append(scope)
        object.__setattr__(self, "_num_agents", n)
        object.__setattr__(self, "_factors", tuple(checked))

    def __setattr__(self, name, value):
        raise AttributeError(f"FactorGraph is immutable (tried to set {name!r})")

    def __reduce__(self):
        # pickle and copy.deepcopy rebuild through __init__ (slots cannot be set directly)
        return type(self), (self._num_agents, self._factors)

    @property
    def num_agents(self) -> int:
        return self._num_agents

    @property
    def factors(self) -> tuple[tuple[int, ...], ...]:
        """The scopes, in the order given (the order of ``FactorValues.tables``)."""
        return self._factors

    @property
    def num_factors(self) -> int:
        return len(self._factors)

    @property
    def orders(self) -> tuple[int, ...]:
        """The distinct factor orders present, ascending."""
        return tuple(sorted({len(f) for f in self._factors}))

    def factor_ids(self, order: int) -> tuple[int, ...]:
        """Indices (into :attr:`factors`) of the factors of the given order, ascending."""
        return tuple(j for j, f in enumerate(self._factors) if len(f) == order)

    def scopes(self, order: int) -> tuple[tuple[int, ...], ...]:
        """Scopes of the factors of the given order, in :meth:`factor_ids` order."""
        return tuple(f for f in self._factors if len(f) == order)

    def __eq__(self, other) -> bool:
        if not isinstance(other, FactorGraph):
            return NotImplemented
        return self._num_agents == other._num_agents and self._factors == other._factors

    def __hash__(self) -> int:
        return hash((self._num_agents, self._factors))

    def __repr__(self) -> str:
        return f"FactorGraph(num_agents={self._num_agents}, factors={list(self._factors)})"

    # ----------------------------------------------------------------- constructors
    @classmethod
    def random(cls, num_agents: int, num_factors: int, order: int = 2,
               seed: int | None = None) -> FactorGraph:
        """``num_factors`` distinct random factors of one order (spn-ac's critic graph,
        docs/design.md, section 4).

        When ``num_factors * order >= num_agents`` every agent is in some factor: the
        first ``ceil(n / order)`` factors partition a random permutation of the agents
        (the last one topped up with other agents), the rest are uniform among the
        remaining agent sets. No two factors share their set of agents while
        ``num_factors <= C(n, order)``; beyond that (20 pairwise factors on 6 agents, which
        have 15 pairs) every set is used and the extra factors are distinct
        re-orderings of random sets, up to ``n! / (n - order)!`` factors in all. Scopes of
        the first ``C(n, order)`` factors are sorted; the same seed gives the same graph.
        """
        n = _check_count(num_agents, "num_agents", 1)
        order = _check_order(order)
        p = _check_count(num_factors, "num_factors", 0)
        sets = math.comb(n, order)
        ordered = math.perm(n, order)
        if p > ordered:
            raise ValueError(f"num_factors={p} is more factors than exist: {n} agents have "
                             f"{ordered} ordered scopes of {order} distinct agents "
                             f"({sets} agent sets)")
        rng = np.random.default_rng(seed)
        if p >= sets:
            chosen = [frozenset(s) for s in itertools.combinations(range(n), order)]
        else:
            chosen = cls._random_sets(n, p, order, rng)
        factors = sorted(tuple(sorted(s)) for s in chosen)
        if p > sets:
            reorderings = [perm for scope in factors
                           for perm in itertools.permutations(scope) if perm != scope]
            picks = rng.choice(len(reorderings), size=p - sets, replace=False)
            factors += sorted(reorderings[int(i)] for i in picks)
        return cls(n, factors)

    @staticmethod
    def _random_sets(n: int, p: int, order: int, rng: np.random.Generator) -> list[frozenset[int]]:
        """``p < C(n, order)`` distinct agent sets, covering every agent when ``p`` allows."""
        chosen: list[frozenset[int]] = []
        perm = [int(a) for a in rng.permutation(n)]
        for start in range(0, n, order):
            if len(chosen) == p:
                break
            group = perm[start:start + order]
            others = [a for a in perm if a not in group]
            extra = rng.choice(len(others), size=order - len(group), replace=False)
            chosen.append(frozenset(group + [others[int(i)] for i in extra]))
        taken = set(chosen)
        if p - len(chosen) > math.comb(n, order) // 2:
            rest = [s for s in map(frozenset, itertools.combinations(range(n), order))
                    if s not in taken]
            picks = rng.choice(len(rest), size=p - len(chosen), replace=False)
            return chosen + [rest[int(i)] for i in picks]
        while len(chosen) < p:
            scope = frozenset(int(a) for a in rng.choice(n, size=order, replace=False))
            if scope not in taken:
                taken.add(scope)
                chosen.append(scope)
        return chosen

    @classmethod
    def complete(cls, num_agents: int, order: int = 2) -> FactorGraph:
        """Every set of ``order`` agents is a factor (C(n, order) factors)."""
        n = _check_count(num_agents, "num_agents", 1)
        return cls(n, itertools.combinations(range(n), _check_order(order)))

    @classmethod
    def line(cls, num_agents: int) -> FactorGraph:
        """Pairwise factors (i, i + 1): a chain."""
        n = _check_count(num_agents, "num_agents", 1)
        return cls(n, [(i, i + 1) for i in range(n - 1)])

    @classmethod
    def ring(cls, num_agents: int) -> FactorGraph:
        """A chain closed by the factor (0, n - 1); needs ``num_agents >= 3``."""
        n = _check_count(num_agents, "num_agents", 3)
        return cls(n, [(i, i + 1) for i in range(n - 1)] + [(0, n - 1)])

    @classmethod
    def star(cls, num_agents: int, center: int = 0) -> FactorGraph:
        """Pairwise factors (center, i) for every other agent i."""
        n = _check_count(num_agents, "num_agents", 1)
        if isinstance(center, bool) or not isinstance(center, int) or not 0 <= center < n:
            raise ValueError(f"center must be an agent index in range({n}), got {center!r}")
        return cls(n, [(center, i) for i in range(n) if i != center])

    @classmethod
    def from_networkx(cls, graph: nx.Graph) -> FactorGraph:
        """Build from a networkx graph.

        Two forms are accepted:

        * the bipartite graph of :meth:`to_networkx`: nodes carry ``bipartite`` (0 agent,
          1 factor) and factor nodes carry ``scope`` (agent indices); factors are taken in
          ``graph.nodes`` order, so a :meth:`to_networkx` graph round-trips exactly;
        * a plain undirected graph whose nodes are agents and whose edges are pairwise
          factors. Nodes ``0..n-1`` keep their labels; other labels are numbered in
          ``graph.nodes`` order.
        """
        if not isinstance(graph, nx.Graph) or graph.is_directed():
            raise ValueError(f"graph must be an undirected networkx.Graph, got {type(graph).__name__}")
        kinds = {d.get("bipartite") for _, d in graph.nodes(data=True)}
        if kinds <= {0, 1} and 1 in kinds:
            num_agents = sum(1 for _, d in graph.nodes(data=True) if d["bipartite"] == 0)
            scopes = []
            for f, d in graph.nodes(data=True):
                if d["bipartite"] != 1:
                    continue
                if "scope" not in d:
                    raise ValueError(f"graph: factor node {f!r} has no 'scope' attribute "
                                     f"(agent indices in table axis order)")
                scopes.append(d["scope"])
            return cls(num_agents, scopes)
        nodes = list(graph.nodes)
        if set(nodes) == set(range(len(nodes))):
            index = {v: v for v in nodes}
        else:
            index = {v: i for i, v in enumerate(nodes)}
        return cls(len(nodes), [(index[u], index[v]) for u, v in graph.edges])

    def to_networkx(self) -> nx.Graph:
        """The bipartite agent/factor graph.

        Agent nodes are ``("agent", i)`` with ``bipartite=0``; factor nodes are
        ``("factor", j)`` with ``bipartite=1`` and ``scope`` (the agent indices, in table
        axis order); an edge joins a factor to each agent in its scope.
        """
        g = nx.Graph()
        g.add_nodes_from((("agent", i), {"bipartite": 0}) for i in range(self._num_agents))
        for j, scope in enumerate(self._factors):
            g.add_node(("factor", j), bipartite=1, scope=scope)
            g.add_edges_from((("factor", j), ("agent", i)) for i in scope)
        return g

    def interaction_graph(self) -> nx.Graph:
        """The agent graph (primal graph): agents joined when they share a factor."""
        g = nx.Graph()
        g.add_nodes_from(range(self._num_agents))
        for scope in self._factors:
            g.add_edges_from(itertools.combinations(scope, 2))
        return g


class NearestGraph:
    """Pairwise factors chosen per state: every agent with its ``neighbours`` nearest other
    agents by position, each pair of agents once.

    The graph of a state has ``num_factors = num_agents * neighbours`` slots: slot
    ``i * neighbours + r`` is agent ``i`` with its ``r``-th nearest other agent (squared
    Euclidean distance, ties to the lower index). Where ``j`` is among ``i``'s nearest and
    ``i`` among ``j``'s, the slot of the higher agent is a repeat: :meth:`scopes` marks it
    dropped, and a Q-function gives it a zero table.

    Args:
        num_agents: number of agents n (>= 2).
        neighbours: nearest others per agent, in ``range(1, n)``.

    Example::

        >>> import torch
        >>> g = NearestGraph(num_agents=3, neighbours=1)
        >>> scopes, kept = g.scopes(torch.tensor([[[0., 0.], [1., 0.], [5., 0.]]]))
        >>> scopes.tolist(), kept.tolist()
        ([[[0, 1], [1, 0], [2, 1]]], [[True, False, True]])
    """

    __slots__ = ("_num_agents", "_neighbours")

    def __init__(self, num_agents: int, neighbours: int = 2):
        n = _check_count(num_agents, "num_agents", 2)
        r = _check_count(neighbours, "neighbours", 1)
        if r >= n:
            raise ValueError(f"neighbours must be below num_agents={n} (each agent's nearest "
                             f"others), got {neighbours!r}")
        object.__setattr__(self, "_num_agents", n)
        object.__setattr__(self, "_neighbours", r)

    def __setattr__(self, name, value):
        raise AttributeError(f"NearestGraph is immutable (tried to set {name!r})")

    def __reduce__(self):
        return type(self), (self._num_agents, self._neighbours)

    @property
    def num_agents(self) -> int:
        return self._num_agents

    @property
    def neighbours(self) -> int:
        return self._neighbours

    @property
    def num_factors(self) -> int:
        """Factor slots per state (dropped repeats included)."""
        return self._num_agents * self._neighbours

    @property
    def orders(self) -> tuple[int, ...]:
        return (2,)

    def scopes(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The factors of each state from the agents' ``positions`` ``[B, n, d]``.

        Returns ``(scopes [B, F, 2], kept [B, F])``: long agent indices (slot ``i * r + q``
        is ``(i, i's q-th nearest)``) and whether the slot is kept (False for the second
        copy of a mutual pair).
        """
        n, r = self._num_agents, self._neighbours
        if not isinstance(positions, torch.Tensor) or positions.dim() != 3 \
                or positions.shape[1] != n:
            got = list(positions.shape) if isinstance(positions, torch.Tensor) else \
                type(positions).__name__
            raise ValueError(f"positions must be a tensor [B, num_agents={n}, d], got {got}")
        distance = positions.new_zeros(positions.shape[:2] + (n,), dtype=torch.float64)
        for x in positions.to(torch.float64).unbind(-1):                   # [B, n, n]
            distance += (x[:, :, None] - x[:, None]).square()
        distance.diagonal(dim1=1, dim2=2).fill_(math.inf)
        # the r nearest in order: argmin keeps the first of equal distances (lower index)
        columns = []
        for _ in range(r):
            column = distance.argmin(-1, keepdim=True)                      # [B, n, 1]
            columns.append(column)
            distance.scatter_(-1, column, math.inf)
        nearest = torch.cat(columns, -1)                                    # [B, n, r]
        agents = torch.arange(n, device=positions.device)
        scopes = torch.stack([agents[:, None].expand_as(nearest), nearest], -1)
        # i's slot (i, j) repeats j's slot (j, i) when i > j and i is among j's nearest
        mutual = (nearest.gather(1, nearest.flatten(1)[..., None].expand(-1, -1, r))
                  .view(-1, n, r, r) == agents[:, None, None]).any(-1)        # [B, n, r]
        kept = ~(mutual & (nearest < agents[:, None]))
        return scopes.flatten(1, 2), kept.flatten(1)

    def __eq__(self, other) -> bool:
        if not isinstance(other, NearestGraph):
            return NotImplemented
        return (self._num_agents, self._neighbours) == (other._num_agents, other._neighbours)

    def __hash__(self) -> int:
        return hash((NearestGraph, self._num_agents, self._neighbours))

    def __repr__(self) -> str:
        return f"NearestGraph(num_agents={self._num_agents}, neighbours={self._neighbours})"
