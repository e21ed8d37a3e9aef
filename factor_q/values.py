"""Batched values of a multilinear factor-graph Q-function, and exact queries on them.

``Q(s, u) = sum_i unary_i(s)[u_i] + sum_f table_f(s)[u_scope(f)]`` (docs/design.md,
section 3). A :class:`FactorValues` holds these numbers for a batch of states: the unary
utilities ``[B, n, k]`` and the factor tables grouped by order, ``[B, F2, k, k]`` for
pairwise and ``[B, F3, k, k, k]`` for triple factors, so every query is a few batched
tensor ops with no Python loop over factors.

Example::

    >>> import torch
    >>> from factor_q import FactorGraph, FactorValues
    >>> g = FactorGraph(3, [(0, 1), (1, 2)])
    >>> v = FactorValues.from_tables(g, [torch.eye(2)[None], torch.eye(2)[None]])
    >>> v.evaluate(torch.tensor([[1, 1, 1]])).tolist(), v.argmax().tolist()
    ([2.0], [[0, 0, 0]])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from circuits import CircuitDistribution
from factor_q.argmax import MAX_TABLE_SIZE, argmax as _argmax
from factor_q.graph import FactorGraph

__all__ = ["FactorValues", "table_index"]

#: Largest joint table (entries per batch element) that :meth:`FactorValues.table` builds.
MAX_TABLE_ENTRIES = 2**24


def table_index(actions: torch.Tensor, scopes: torch.Tensor, num_actions: int) -> torch.Tensor:
    """Each factor's entry in its row-major table (axis ``p`` the scope's ``p``-th agent):
    joint actions ``[B, n]`` and factor scopes ``[F, order]`` -> ``[B, F]``."""
    picked = actions.index_select(1, scopes.reshape(-1)).view(actions.shape[0], *scopes.shape)
    flat = picked[..., 0]
    for p in range(1, scopes.shape[1]):
        flat = flat * num_actions + picked[..., p]
    return flat


def _check_tensor(t, name: str, dim: int) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if t.dim() != dim:
        raise ValueError(f"{name} must have {dim} dimensions, got shape {list(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        bad = t[~torch.isfinite(t)][0].item()
        raise ValueError(f"{name} must hold finite values, got {bad} (at {int((~torch.isfinite(t)).sum())} "
                         f"of {t.numel()} entries)")
    return t


class FactorValues:
    """Q-function values for a batch of states on one :class:`FactorGraph`.

    Args:
        graph: the factor graph (n agents).
        unary: ``[B, n, k]`` per-agent utilities, or ``None`` for no unary terms.
        pairwise: ``[B, F2, k, k]`` tables of ``graph.factor_ids(2)``, in that order; axis
            ``1 + p`` is the ``p``-th agent of the factor's scope.
        triple: ``[B, F3, k, k, k]`` tables of ``graph.factor_ids(3)``.

    Attributes ``unary`` (zeros when there are no unary terms), ``pairwise`` and
    ``triple`` (``None`` when the graph has no factor of that order). :meth:`from_tables`
    builds one from a list of per-factor tables.
    """

    def __init__(self, graph: FactorGraph, unary: torch.Tensor | None = None,
                 pairwise: torch.Tensor | None = None, triple: torch.Tensor | None = None):
        if not isinstance(graph, FactorGraph):
            raise TypeError(f"graph must be a FactorGraph, got {type(graph).__name__}")
        given = {"unary": unary, "pairwise": pairwise, "triple": triple}
        ref = next((t for t in given.values() if t is not None), None)
        if ref is None:
            raise ValueError("FactorValues needs at least one of unary, pairwise, triple")
        for name, dim in (("unary", 3), ("pairwise", 4), ("triple", 5)):
            if given[name] is not None:
                _check_tensor(given[name], name, dim)
        batch, k = ref.shape[0], ref.shape[-1]
        expected = {"unary": (batch, graph.num_agents, k),
                    "pairwise": (batch, len(graph.factor_ids(2)), k, k),
                    "triple": (batch, len(graph.factor_ids(3)), k, k, k)}
        for name, shape in expected.items():
            t = given[name]
            if t is None and name != "unary" and shape[1] > 0:
                raise ValueError(f"{name} tables are missing: the graph has {shape[1]} "
                                 f"factors of that order")
            if t is not None and tuple(t.shape) != shape:
                raise ValueError(f"{name} must have shape {list(shape)} (batch, "
                                 f"{'agents' if name == 'unary' else 'factors'}, actions...), "
                                 f"got {list(t.shape)}")
            if t is not None and (t.dtype, t.device) != (ref.dtype, ref.device):
                raise ValueError(f"{name} has dtype {t.dtype} on {t.device}, but the other "
                                 f"values have {ref.dtype} on {ref.device}")
        self.graph = graph
        self.num_actions = k
        self.unary = unary if unary is not None else ref.new_zeros(expected["unary"])
        self.pairwise = pairwise if expected["pairwise"][1] > 0 else None
        self.triple = triple if expected["triple"][1] > 0 else None

    @classmethod
    def trusted(cls, graph: FactorGraph, unary: torch.Tensor | None,
                pairwise: torch.Tensor | None, triple: torch.Tensor | None) -> FactorValues:
        """Build without checks, for a network's own outputs whose shapes are right by
        construction (:class:`~factor_q.FactorQ`); user input goes through the constructor."""
        values = cls.__new__(cls)
        ref = next(t for t in (unary, pairwise, triple) if t is not None)
        values.graph, values.num_actions = graph, ref.shape[-1]
        values.unary = unary if unary is not None else ref.new_zeros(
            (ref.shape[0], graph.num_agents, ref.shape[-1]))
        values.pairwise = pairwise if graph.factor_ids(2) else None
        values.triple = triple if graph.factor_ids(3) else None
        return values

    @classmethod
    def from_tables(cls, graph: FactorGraph, tables: Sequence[torch.Tensor],
                    unary: torch.Tensor | None = None) -> FactorValues:
        """Build from one table per factor of ``graph``, in ``graph.factors`` order.

        Args:
            tables: ``tables[j]`` is ``[B, k, k]`` or ``[B, k, k, k]`` for factor ``j``.
            unary: ``[B, n, k]`` or ``None``.
        """
        if not isinstance(graph, FactorGraph):
            raise TypeError(f"graph must be a FactorGraph, got {type(graph).__name__}")
        tables = list(tables)
        if len(tables) != graph.num_factors:
            raise ValueError(f"tables: got {len(tables)} tables for {graph.num_factors} factors")
        for j, (t, scope) in enumerate(zip(tables, graph.factors)):
            _check_tensor(t, f"tables[{j}] (factor {scope})", 1 + len(scope))
        grouped = {}
        for order in (2, 3):
            ids = graph.factor_ids(order)
            if ids:
                shapes = {tuple(tables[j].shape) for j in ids}
                if len(shapes) != 1:
                    raise ValueError(f"tables of order {order} must share one shape "
                                     f"[B, k, ...], got {sorted(map(list, shapes))}")
                grouped[order] = torch.stack([tables[j] for j in ids], dim=1)
        return cls(graph, unary, grouped.get(2), grouped.get(3))

    @property
    def batch_size(self) -> int:
        return self.unary.shape[0]

    @property
    def tables(self) -> list[torch.Tensor]:
        """Per-factor tables in ``graph.factors`` order: ``[B, k, k]`` or ``[B, k, k, k]``."""
        out: list[torch.Tensor | None] = [None] * self.graph.num_factors
        for order, grouped in ((2, self.pairwise), (3, self.triple)):
            for slot, j in enumerate(self.graph.factor_ids(order)):
                out[j] = grouped[:, slot]
        return out

    def groups(self) -> list[tuple[tuple[tuple[int, ...], ...], torch.Tensor]]:
        """``(scopes, tables)`` for each factor order present, tables ``[B, F, k, ...]``."""
        return [(self.graph.scopes(order), grouped)
                for order, grouped in ((2, self.pairwise), (3, self.triple))
                if grouped is not None]

    def _scope_index(self, scopes) -> torch.Tensor:
        return torch.tensor(scopes, dtype=torch.long, device=self.unary.device)

    def _check_actions(self, actions: torch.Tensor, name: str = "actions") -> torch.Tensor:
        """Validate joint actions ``[B, n]`` (integers in ``range(k)``); returns them as long."""
        if not isinstance(actions, torch.Tensor):
            raise TypeError(f"{name} must be a LongTensor, got {type(actions).__name__}")
        if actions.is_floating_point() or actions.is_complex() or actions.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer tensor, got dtype {actions.dtype}")
        expected = (self.batch_size, self.graph.num_agents)
        if tuple(actions.shape) != expected:
            raise ValueError(f"{name} must have shape {list(expected)} (batch, agents), "
                             f"got {list(actions.shape)}")
        if actions.numel() and (actions.min() < 0 or actions.max() >= self.num_actions):
            raise ValueError(f"{name} must be in range({self.num_actions}), got values from "
                             f"{int(actions.min())} to {int(actions.max())}")
        return actions.to(device=self.unary.device, dtype=torch.long)

    def evaluate(self, actions: torch.Tensor) -> torch.Tensor:
        """``Q(s, u)`` for joint actions ``[B, n]`` -> ``[B]`` (one gather per factor order)."""
        actions = self._check_actions(actions)
        k = self.num_actions
        q = self.unary.gather(2, actions.unsqueeze(-1)).squeeze(-1).sum(-1)
        for scopes, grouped in self.groups():
            flat = table_index(actions, self._scope_index(scopes), k)      # [B, F]
            values = grouped.flatten(2).gather(2, flat.unsqueeze(-1)).squeeze(-1)
            q = q + values.sum(-1)
        return q

    def table(self) -> torch.Tensor:
        """The full joint table ``[B, k, ..., k]`` (n action axes in agent order).

        Small n only: raises ``ValueError`` above ``MAX_TABLE_ENTRIES`` entries per state.
        """
        n, k = self.graph.num_agents, self.num_actions
        if k**n > MAX_TABLE_ENTRIES:
            raise ValueError(f"table() would have k**n = {k}**{n} = {k**n} entries per state, "
                             f"more than MAX_TABLE_ENTRIES = {MAX_TABLE_ENTRIES}")
        batch = self.batch_size
        total = self.unary.new_zeros((batch,) + (k,) * n)
        for i in range(n):
            total = total + self.unary[:, i].reshape((batch,) + tuple(k if j == i else 1
                                                                     for j in range(n)))
        for scope, t in zip(self.graph.factors, self.tables):
            perm = sorted(range(len(scope)), key=lambda p: scope[p])
            aligned = t.permute(0, *(1 + p for p in perm))
            total = total + aligned.reshape((batch,) + tuple(k if j in scope else 1
                                                            for j in range(n)))
        return total

    def expectation(self, dist: CircuitDistribution) -> torch.Tensor:
        """Exact ``E_{u ~ dist}[Q(s, u)]`` -> ``[B]``, for any circuit distribution.

        Uses only ``dist.marginals()`` ``[B', n, k]`` for the unary terms and
        ``dist.scope_marginals(scopes)`` ``[B', F, k, ...]`` for the tables (linearity of
        expectation), so it is exact and differentiable for every ``CircuitDistribution``.
        ``dist``'s batch size ``B'`` must equal ``B`` or be 1; a distribution without batch
        shape (``circuit.distribution()``) is broadcast too.
        """
        for method in ("marginals", "scope_marginals"):
            if not callable(getattr(dist, method, None)):
                raise TypeError(f"dist must be a CircuitDistribution (with marginals() and "
                                f"scope_marginals()), got {type(dist).__name__}")
        n, k = self.graph.num_agents, self.num_actions
        marg = dist.marginals()
        unbatched = marg.dim() == 2  # batch_shape [] (a circuit's own parameters)
        if unbatched:
            marg = marg.unsqueeze(0)
        if (marg.dim() != 3 or marg.shape[0] not in (1, self.batch_size)
                or marg.shape[1] != n or marg.shape[2] != k):
            raise ValueError(f"dist must be over {n} variables with {k} states and batch size "
                             f"{self.batch_size}, 1 or none, matching the values; its "
                             f"marginals() have shape {list(marg.shape)} (batch, vars, states)")
        result = (marg * self.unary).sum((-2, -1))
        for scopes, grouped in self.groups():
            joint = dist.scope_marginals(list(scopes))
            if unbatched:
                joint = joint.unsqueeze(0)
            result = result + (joint * grouped).flatten(1).sum(-1)
        return result

    def argmax(self, method: str = "auto", *, max_table_size: int = MAX_TABLE_SIZE,
               iterations: int = 50, damping: float = 0.5, return_exact: bool = False):
        """Best joint actions ``[B, n]`` (LongTensor).

        ``method="auto"`` runs exact variable elimination (min-fill order from networkx)
        when every intermediate table has at most ``max_table_size`` entries per state
        (i.e. ``k ** (induced width + 1)``), and otherwise max-plus message passing, which is
        approximate on loopy graphs: it returns the best joint action (by :meth:`evaluate`)
        seen over ``iterations`` damped rounds. ``"elimination"`` and ``"max_plus"`` force a
        method. With ``return_exact=True`` returns ``(actions, exact)`` where ``exact`` says
        whether the result is a guaranteed maximum.
        """
        actions, exact = _argmax(self, method, max_table_size=max_table_size,
                                 iterations=iterations, damping=damping)
        return (actions, exact) if return_exact else actions

    def __repr__(self) -> str:
        return (f"FactorValues(batch={self.batch_size}, agents={self.graph.num_agents}, "
                f"actions={self.num_actions}, factors={self.graph.num_factors})")
