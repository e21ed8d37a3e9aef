"""Batched values of a multilinear factor-graph Q-function, and exact queries on them.

``Q(s, u) = sum_i unary_i(s)[u_i] + sum_f table_f(s)[u_scope(f)]`` (docs/design.md,
section 3). A :class:`FactorValues` holds these numbers for a batch of states: the unary
utilities ``[B, n, k]`` and the factor tables grouped by order, ``[B, F2, k, k]`` for
pairwise and ``[B, F3, k, k, k]`` for triple factors, so every query is a few batched
tensor ops with no Python loop over factors.

An *ensemble* of ``E`` Q-functions on one graph (spn-ac's twin critics: ``E = 2``) is one
:class:`FactorValues` whose tensors carry a leading ensemble axis, ``[E, B, n, k]`` and
``[E, B, F, k, ...]``: each query then answers for every member at once (``[E, B]``),
``mean()`` is the members' mean Q (one Q-function again) and ``min_expectation`` /
``min_evaluate`` the smallest member's value per state.

Example::

    >>> import torch
    >>> from factor_q import FactorGraph, FactorValues
    >>> g = FactorGraph(3, [(0, 1), (1, 2)])
    >>> v = FactorValues.from_tables(g, [torch.eye(2)[None], torch.eye(2)[None]])
    >>> v.evaluate(torch.tensor([[1, 1, 1]])).tolist(), v.argmax().tolist()
    ([2.0], [[0, 0, 0]])
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

from circuits import CircuitDistribution
from factor_q.argmax import MAX_TABLE_SIZE, argmax as _argmax
from factor_q.graph import FactorGraph, NearestGraph

__all__ = ["FactorValues", "gather_pair_marginals", "state_pair_marginals", "table_index"]

#: Largest joint table (entries per batch element) that :meth:`FactorValues.table` builds.
MAX_TABLE_ENTRIES = 2**24

#: Dimensions of each tensor of one Q-function's values (an ensemble adds a leading axis).
_DIMS = {"unary": 3, "pairwise": 4, "triple": 5}


def table_index(actions: torch.Tensor, scopes: torch.Tensor, num_actions: int) -> torch.Tensor:
    """Each factor's entry in its row-major table (axis ``p`` the scope's ``p``-th agent):
    joint actions ``[B, n]`` and factor scopes ``[F, order]`` (or per state ``[B, F,
    order]``) -> ``[B, F]``."""
    if scopes.dim() == 3:
        picked = actions.gather(1, scopes.flatten(1)).view(scopes.shape)
    else:
        picked = actions.index_select(1, scopes.reshape(-1)).view(actions.shape[0],
                                                                  *scopes.shape)
    flat = picked[..., 0]
    for p in range(1, scopes.shape[-1]):
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
    """Q-function values for a batch of states on one :class:`FactorGraph`, or for an
    ensemble of Q-functions on it.

    Args:
        graph: the factor graph (n agents), or a :class:`NearestGraph`, whose pairwise
            factors differ from state to state.
        unary: ``[B, n, k]`` per-agent utilities, or ``None`` for no unary terms.
        pairwise: ``[B, F2, k, k]`` tables of ``graph.factor_ids(2)``, in that order; axis
            ``1 + p`` is the ``p``-th agent of the factor's scope. On a ``NearestGraph``,
            the tables of ``pair_scopes``' factors.
        triple: ``[B, F3, k, k, k]`` tables of ``graph.factor_ids(3)``.
        pair_scopes: on a ``NearestGraph`` only (and needed there), each state's pairwise
            scopes ``[B, F2, 2]`` (long agent indices, the two distinct): table ``[b, f]``
            is over agents ``pair_scopes[b, f]``. Scopes may repeat within a state (the
            tables add up).

    Every given tensor may instead have one more, leading axis ``E``: an ensemble of ``E``
    Q-functions (``ensemble == E``; ``None`` without that axis), whose queries return one
    result per member, ``[E, B]``.

    Attributes ``unary`` (zeros when there are no unary terms), ``pairwise`` and
    ``triple`` (``None`` when the graph has no factor of that order). :meth:`from_tables`
    builds one from a list of per-factor tables, :meth:`stack` an ensemble from its members.
    """

    def __init__(self, graph: FactorGraph | NearestGraph, unary: torch.Tensor | None = None,
                 pairwise: torch.Tensor | None = None, triple: torch.Tensor | None = None,
                 pair_scopes: torch.Tensor | None = None):
        if not isinstance(graph, (FactorGraph, NearestGraph)):
            raise TypeError(f"graph must be a FactorGraph or NearestGraph, got "
                            f"{type(graph).__name__}")
        local = isinstance(graph, NearestGraph)
        if local and (pair_scopes is None or pairwise is None or triple is not None):
            raise ValueError("values on a NearestGraph need pairwise tables and their "
                             "pair_scopes [B, F, 2], and have no triple tables")
        if not local and pair_scopes is not None:
            raise ValueError("pair_scopes are for a NearestGraph; this graph's scopes are "
                             "fixed (graph.factors)")
        given = {"unary": unary, "pairwise": pairwise, "triple": triple}
        ref_name = next((name for name, t in given.items() if t is not None), None)
        if ref_name is None:
            raise ValueError("FactorValues needs at least one of unary, pairwise, triple")
        ref = given[ref_name]
        if isinstance(ref, torch.Tensor) and ref.dim() == _DIMS[ref_name] + 1:
            lead = tuple(ref.shape[:1])                    # an ensemble axis
        else:
            lead = ()
        for name, dim in _DIMS.items():
            if given[name] is not None:
                _check_tensor(given[name], name, dim + len(lead))
        batch, k = ref.shape[len(lead)], ref.shape[-1]
        if local:
            _check_pair_scopes(pair_scopes, batch, graph.num_agents)
        counts = ((pair_scopes.shape[1], 0) if local
                  else (len(graph.factor_ids(2)), len(graph.factor_ids(3))))
        expected = {"unary": lead + (batch, graph.num_agents, k),
                    "pairwise": lead + (batch, counts[0], k, k),
                    "triple": lead + (batch, counts[1], k, k, k)}
        axes = "ensemble, batch" if lead else "batch"
        for name, shape in expected.items():
            t, count = given[name], shape[len(lead) + 1]
            if t is None and name != "unary" and count > 0:
                raise ValueError(f"{name} tables are missing: the graph has {count} "
                                 f"factors of that order")
            if t is not None and tuple(t.shape) != shape:
                raise ValueError(f"{name} must have shape {list(shape)} ({axes}, "
                                 f"{'agents' if name == 'unary' else 'factors'}, actions...), "
                                 f"got {list(t.shape)}")
            if t is not None and (t.dtype, t.device) != (ref.dtype, ref.device):
                raise ValueError(f"{name} has dtype {t.dtype} on {t.device}, but the other "
                                 f"values have {ref.dtype} on {ref.device}")
        if local and pair_scopes.device != ref.device:
            raise ValueError(f"pair_scopes are on {pair_scopes.device}, the values on "
                             f"{ref.device}")
        self._set(graph, unary, pairwise, triple, pair_scopes)

    @classmethod
    def trusted(cls, graph: FactorGraph | NearestGraph, unary: torch.Tensor | None,
                pairwise: torch.Tensor | None, triple: torch.Tensor | None,
                pair_scopes: torch.Tensor | None = None) -> FactorValues:
        """Build without checks, for a network's own outputs whose shapes are right by
        construction (:class:`~factor_q.FactorQ`); user input goes through the constructor."""
        values = cls.__new__(cls)
        values._set(graph, unary, pairwise, triple, pair_scopes)
        return values

    def _set(self, graph, unary, pairwise, triple, pair_scopes=None) -> None:
        name, ref = next((name, t) for name, t in
                         (("unary", unary), ("pairwise", pairwise), ("triple", triple))
                         if t is not None)
        lead = tuple(ref.shape[:ref.dim() - _DIMS[name]])
        self.graph, self.num_actions = graph, ref.shape[-1]
        self.ensemble: int | None = lead[0] if lead else None
        self.unary = unary if unary is not None else ref.new_zeros(
            lead + (ref.shape[len(lead)], graph.num_agents, ref.shape[-1]))
        self.pair_scopes: torch.Tensor | None = pair_scopes
        if pair_scopes is not None:
            self.pairwise, self.triple = pairwise, None
        else:
            self.pairwise = pairwise if graph.factor_ids(2) else None
            self.triple = triple if graph.factor_ids(3) else None

    @classmethod
    def stack(cls, members: Sequence[FactorValues]) -> FactorValues:
        """The ensemble of ``members`` (``E`` values without an ensemble axis, on one graph,
        with one batch size, dtype and device): tensors ``[E, B, ...]``."""
        members = list(members)
        if not members or not all(isinstance(m, FactorValues) for m in members):
            raise TypeError(f"members must be a non-empty sequence of FactorValues, got "
                            f"{[type(m).__name__ for m in members]}")
        if any(m.ensemble is not None for m in members):
            raise ValueError("members must be single Q-functions, not ensembles")
        graph, scopes = members[0].graph, members[0].pair_scopes
        if any(m.graph != graph for m in members):
            raise ValueError(f"members must share one graph, got "
                             f"{sorted({repr(m.graph) for m in members})}")
        if scopes is not None and not all(m.pair_scopes.shape == scopes.shape
                                          and torch.equal(m.pair_scopes, scopes)
                                          for m in members):
            raise ValueError("members on a NearestGraph must share their pair_scopes")
        parts = [None if getattr(members[0], name) is None else
                 torch.stack([getattr(m, name) for m in members])
                 for name in ("unary", "pairwise", "triple")]
        return cls(graph, *parts, pair_scopes=scopes)

    @classmethod
    def from_tables(cls, graph: FactorGraph, tables: Sequence[torch.Tensor],
                    unary: torch.Tensor | None = None) -> FactorValues:
        """Build from one table per factor of ``graph``, in ``graph.factors`` order.

        Args:
            tables: ``tables[j]`` is ``[B, k, k]`` or ``[B, k, k, k]`` for factor ``j``.
            unary: ``[B, n, k]`` or ``None``.
        """
        if not isinstance(graph, FactorGraph):
            raise TypeError(f"graph must be a FactorGraph, got {type(graph).__name__} (values "
                            f"on a NearestGraph are built with the constructor)")
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
        return self.unary.shape[-3]

    @property
    def tables(self) -> list[torch.Tensor]:
        """Per-factor tables in ``graph.factors`` order: ``[B, k, k]`` or ``[B, k, k, k]``
        (``[E, B, ...]`` for an ensemble); on a ``NearestGraph``, the pairwise slots'."""
        axis = self.unary.dim() - 2                        # the factor axis of the groups
        if self.pair_scopes is not None:
            return list(self.pairwise.unbind(axis))
        out: list[torch.Tensor | None] = [None] * self.graph.num_factors
        for order, grouped in ((2, self.pairwise), (3, self.triple)):
            for slot, j in enumerate(self.graph.factor_ids(order)):
                out[j] = grouped.select(axis, slot)
        return out

    def groups(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(scopes, tables)`` for each factor order present: scopes a long tensor ``[F,
        order]`` (``[B, F, 2]`` on a ``NearestGraph``), tables ``[B, F, k, ...]`` (``[E, B,
        F, k, ...]`` for an ensemble)."""
        if self.pair_scopes is not None:
            return [(self.pair_scopes, self.pairwise)]
        return [(torch.tensor(self.graph.scopes(order), dtype=torch.long,
                              device=self.unary.device), grouped)
                for order, grouped in ((2, self.pairwise), (3, self.triple))
                if grouped is not None]

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
        """``Q(s, u)`` for joint actions ``[B, n]`` -> ``[B]`` (``[E, B]`` for an ensemble,
        the same actions for every member; one gather per factor order)."""
        actions = self._check_actions(actions)
        lead, k = self.unary.shape[:-3], self.num_actions
        index = actions.expand(*lead, -1, -1).unsqueeze(-1)                 # [*E, B, n, 1]
        q = self.unary.gather(-1, index).squeeze(-1).sum(-1)
        for scopes, grouped in self.groups():
            flat = table_index(actions, scopes, k)                          # [B, F]
            index = flat.expand(*lead, -1, -1).unsqueeze(-1)
            q = q + grouped.flatten(-scopes.shape[-1]).gather(-1, index).squeeze(-1).sum(-1)
        return q

    def local_values(self, actions: torch.Tensor) -> torch.Tensor:
        """Each agent's values of its own actions with the others' held at ``actions``:
        ``[B, n, k]`` (``[E, B, n, k]`` for an ensemble), entry ``[b, i, a]`` being
        ``Q(s_b, u)`` for ``u = actions[b]`` with agent ``i``'s action set to ``a``. Its
        argmax over ``a`` is agent ``i``'s best response to the others' actions; entry
        ``[b, i, actions[b, i]]`` is ``Q(s_b, actions[b])``.

        Exact: the unary rows plus, for each factor and each of its agents, the factor's
        table along that agent's axis at the others' actions.
        """
        actions = self._check_actions(actions)
        lead, k = self.unary.shape[:-3], self.num_actions
        own = actions.expand(*lead, -1, -1).unsqueeze(-1)                   # [*E, B, n, 1]
        picked = self.unary.gather(-1, own)                                 # [*E, B, n, 1]
        # Q(u) from the unary rows, with agent i's row read at each action instead
        total = self.unary - picked + picked.sum(-2, keepdim=True)          # [*E, B, n, k]
        for scopes, grouped in self.groups():
            order = scopes.shape[-1]
            flat = grouped.flatten(-order)                                  # [*E, B, F, k^o]
            entry = table_index(actions, scopes, k)                         # [B, F]
            at = flat.gather(-1, entry.expand(*lead, -1, -1).unsqueeze(-1)).squeeze(-1)
            total = total + at.sum(-1)[..., None, None]
            every = scopes.expand(actions.shape[0], *scopes.shape[-2:])     # [B, F, o]
            for p in range(order):
                agent = every[..., p]                                       # [B, F]
                stride = k ** (order - 1 - p)
                # the factor's entries with its p-th agent at each action, the rest at u
                rest = entry - actions.gather(1, agent) * stride            # [B, F]
                column = rest.unsqueeze(-1) + stride * torch.arange(k, device=entry.device)
                change = flat.gather(-1, column.expand(*lead, -1, -1, -1)) - at.unsqueeze(-1)
                index = agent.expand(*lead, -1, -1).unsqueeze(-1).expand_as(change)
                total = total.scatter_add(-2, index, change)                # [*E, B, n, k]
        return total

    def table(self) -> torch.Tensor:
        """The full joint table ``[B, k, ..., k]`` (n action axes in agent order;
        ``[E, B, k, ..., k]`` for an ensemble).

        Small n only: raises ``ValueError`` above ``MAX_TABLE_ENTRIES`` entries per state.
        """
        n, k = self.graph.num_agents, self.num_actions
        if k**n > MAX_TABLE_ENTRIES:
            raise ValueError(f"table() would have k**n = {k}**{n} = {k**n} entries per state, "
                             f"more than MAX_TABLE_ENTRIES = {MAX_TABLE_ENTRIES}")
        prefix = tuple(self.unary.shape[:-2])                               # [*E, B]
        lead = tuple(range(len(prefix)))
        total = self.unary.new_zeros(prefix + (k,) * n)
        for i in range(n):
            total = total + self.unary[..., i, :].reshape(
                prefix + tuple(k if j == i else 1 for j in range(n)))
        if self.pair_scopes is not None:
            # every joint action's entry of every slot's table: [B, F, k**n] columns
            joint = torch.cartesian_prod(*[torch.arange(k, device=total.device)] * n)
            first, second = self.pair_scopes.unbind(-1)                     # [B, F]
            column = joint.t()[first] * k + joint.t()[second]              # [B, F, k**n]
            picked = self.pairwise.flatten(-2).gather(
                -1, column.expand(*prefix[:-1], *column.shape))
            return total + picked.sum(-2).view(prefix + (k,) * n)
        for scope, t in zip(self.graph.factors, self.tables):
            perm = sorted(range(len(scope)), key=lambda p: scope[p])
            aligned = t.permute(*lead, *(len(prefix) + p for p in perm))
            total = total + aligned.reshape(prefix + tuple(k if j in scope else 1
                                                           for j in range(n)))
        return total

    def expectation(self, dist: CircuitDistribution) -> torch.Tensor:
        """Exact ``E_{u ~ dist}[Q(s, u)]`` -> ``[B]`` (``[E, B]`` for an ensemble, every
        member under the same ``dist``), for any circuit distribution.

        Uses only ``dist.marginals()`` ``[B', n, k]`` for the unary terms and
        ``dist.scope_marginals(scopes)`` ``[B', F, k, ...]`` for the tables (linearity of
        expectation), each called once, so it is exact and differentiable for every
        ``CircuitDistribution``. ``dist``'s batch size ``B'`` must equal ``B`` or be 1; a
        distribution without batch shape (``circuit.distribution()``) is broadcast too.
        """
        for method in ("marginals", "scope_marginals"):
            if not callable(getattr(dist, method, None)):
                raise TypeError(f"dist must be a CircuitDistribution (with marginals() and "
                                f"scope_marginals()), got {type(dist).__name__}")
        n, k = self.graph.num_agents, self.num_actions
        marg = dist.marginals()
        batched = marg.dim() == 3           # batch_shape [] (a circuit's own parameters): 2
        if (marg.dim() not in (2, 3) or (batched and marg.shape[0] not in (1, self.batch_size))
                or marg.shape[-2] != n or marg.shape[-1] != k):
            raise ValueError(f"dist must be over {n} variables with {k} states and batch size "
                             f"{self.batch_size}, 1 or none, matching the values; its "
                             f"marginals() have shape {list(marg.shape)} (batch, vars, states)")
        result = (marg * self.unary).sum((-2, -1))
        if self.pair_scopes is not None:
            joint = state_pair_marginals(dist, self.pair_scopes, n)        # [B, F, k, k]
            return result + (joint * self.pairwise).flatten(-3).sum(-1)
        for order, grouped in ((2, self.pairwise), (3, self.triple)):
            if grouped is not None:
                joint = dist.scope_marginals(list(self.graph.scopes(order)))  # [B', F, k, ...]
                result = result + (joint * grouped).flatten(-order - 1).sum(-1)
        return result

    def clamp(self, evidence: torch.Tensor) -> FactorValues:
        """The same Q-function with some agents' actions given: ``evidence`` ``[B, n]``
        holds agent ``i``'s action, or -1 where ``i`` is free.

        Every joint action that disagrees with the evidence is lowered, per disagreeing
        agent, by more than Q's range at its state (the sum of every unary row's and table's
        range, plus 1), through the unary terms. So :meth:`evaluate` is unchanged on the
        joint actions that agree, every agreeing joint action scores above every
        disagreeing one, and :meth:`argmax` (either method) returns the best joint action
        with the fixed agents' actions. An ensemble's members are clamped alike.
        """
        n, k = self.graph.num_agents, self.num_actions
        if not isinstance(evidence, torch.Tensor) or evidence.is_floating_point() or (
                evidence.dtype == torch.bool):
            got = evidence.dtype if isinstance(evidence, torch.Tensor) else type(evidence).__name__
            raise TypeError(f"evidence must be an integer tensor [B, n], got {got}")
        if tuple(evidence.shape) != (self.batch_size, n):
            raise ValueError(f"evidence must have shape {[self.batch_size, n]} (batch, agents), "
                             f"got {list(evidence.shape)}")
        if evidence.numel() and (evidence.min() < -1 or evidence.max() >= k):
            raise ValueError(f"evidence must be an action in range({k}) or -1 (free), got "
                             f"values from {int(evidence.min())} to {int(evidence.max())}")
        evidence = evidence.to(self.unary.device, torch.long)
        span = (self.unary.amax(-1) - self.unary.amin(-1)).sum(-1)           # [*E, B]
        for scopes, grouped in self.groups():
            flat = grouped.flatten(-scopes.shape[-1])
            span = span + (flat.amax(-1) - flat.amin(-1)).sum(-1)
        actions = torch.arange(k, device=evidence.device)
        differs = (evidence[..., None] >= 0) & (actions != evidence[..., None])  # [B, n, k]
        unary = self.unary - (span + 1)[..., None, None] * differs.to(self.unary.dtype)
        return FactorValues.trusted(self.graph, unary, self.pairwise, self.triple,
                                    self.pair_scopes)

    def mean(self) -> FactorValues:
        """The ensemble members' mean ``sum_j Q_j / E``: one Q-function's values (itself
        multilinear on the same graph), with no ensemble axis."""
        self._check_ensemble("mean()")
        return FactorValues.trusted(self.graph, self.unary.mean(0),
                                    *(None if t is None else t.mean(0)
                                      for t in (self.pairwise, self.triple)),
                                    self.pair_scopes)

    def min_evaluate(self, actions: torch.Tensor) -> torch.Tensor:
        """``min_j Q_j(s, u)`` ``[B]`` over the ensemble's members (:meth:`evaluate`); one
        Q-function's own values without an ensemble axis."""
        q = self.evaluate(actions)
        return q if self.ensemble is None else q.min(0).values

    def min_expectation(self, dist: CircuitDistribution) -> torch.Tensor:
        """``min_j E_{u ~ dist}[Q_j(s, u)]`` ``[B]`` over the ensemble's members
        (:meth:`expectation`); one Q-function's own expectation without an ensemble axis."""
        expected = self.expectation(dist)
        return expected if self.ensemble is None else expected.min(0).values

    def __getitem__(self, member: int) -> FactorValues:
        """Member ``member`` of an ensemble, without the ensemble axis (so ``for q in
        values`` walks the members)."""
        self._check_ensemble("indexing")
        if isinstance(member, bool) or not isinstance(member, int):
            raise TypeError(f"an ensemble is indexed by an int member, got {member!r}")
        if not -self.ensemble <= member < self.ensemble:
            raise IndexError(f"member {member} of an ensemble of {self.ensemble}")
        return FactorValues.trusted(self.graph, self.unary[member],
                                    *(None if t is None else t[member]
                                      for t in (self.pairwise, self.triple)),
                                    self.pair_scopes)

    def _check_ensemble(self, query: str) -> None:
        if self.ensemble is None:
            raise TypeError(f"{query} needs an ensemble (tensors with a leading ensemble "
                            f"axis); these values are one Q-function's")

    def argmax(self, method: str = "auto", *, max_table_size: int = MAX_TABLE_SIZE,
               iterations: int = 50, damping: float = 0.5, return_exact: bool = False):
        """Best joint actions ``[B, n]`` (LongTensor).

        ``method="auto"`` runs exact variable elimination (min-fill order from networkx)
        when every intermediate table has at most ``max_table_size`` entries per state
        (i.e. ``k ** (induced width + 1)``), and otherwise max-plus message passing, which is
        approximate on loopy graphs: it returns the best joint action (by :meth:`evaluate`)
        seen over ``iterations`` damped rounds. ``"elimination"`` and ``"max_plus"`` force a
        method. On a ``NearestGraph`` (a graph per state) ``"auto"`` is max-plus. With ``return_exact=True`` returns ``(actions, exact)`` where ``exact`` says
        whether the result is a guaranteed maximum. Of one Q-function only: an ensemble's
        best joint actions under its mean are ``values.mean().argmax()``.
        """
        if self.ensemble is not None:
            raise ValueError(f"argmax of an ensemble of {self.ensemble} Q-functions is not "
                             f"defined; take it of one, such as values.mean()")
        actions, exact = _argmax(self, method, max_table_size=max_table_size,
                                 iterations=iterations, damping=damping)
        return (actions, exact) if return_exact else actions

    def __repr__(self) -> str:
        members = "" if self.ensemble is None else f"ensemble={self.ensemble}, "
        return (f"FactorValues({members}batch={self.batch_size}, "
                f"agents={self.graph.num_agents}, "
                f"actions={self.num_actions}, factors={self.graph.num_factors})")


def _check_pair_scopes(scopes, batch: int, num_agents: int) -> None:
    if not isinstance(scopes, torch.Tensor) or scopes.is_floating_point() \
            or scopes.dtype == torch.bool:
        raise TypeError(f"pair_scopes must be an integer tensor [B, F, 2], got "
                        f"{getattr(scopes, 'dtype', type(scopes).__name__)}")
    if scopes.dim() != 3 or scopes.shape[0] != batch or scopes.shape[2] != 2:
        raise ValueError(f"pair_scopes must have shape [B={batch}, F, 2], got "
                         f"{list(scopes.shape)}")
    if scopes.numel() and (scopes.min() < 0 or scopes.max() >= num_agents):
        raise ValueError(f"pair_scopes must hold agent indices in range({num_agents}), got "
                         f"values from {int(scopes.min())} to {int(scopes.max())}")
    if bool((scopes[..., 0] == scopes[..., 1]).any()):
        raise ValueError("pair_scopes: a factor's two agents must differ")


def state_pair_marginals(dist: CircuitDistribution, scopes: torch.Tensor,
                         num_agents: int) -> torch.Tensor:
    """Each state's pair tables ``[B, F, k, k]`` for its own scopes ``[B, F, 2]``: the
    distribution's own ``state_pair_marginals(scopes)`` where it has one (a region-tree
    circuit's, or a distribution that places its agents per state), else
    :func:`gather_pair_marginals`."""
    own = getattr(dist, "state_pair_marginals", None)
    return own(scopes) if callable(own) else gather_pair_marginals(dist, scopes, num_agents)


def gather_pair_marginals(dist, scopes: torch.Tensor, num_agents: int) -> torch.Tensor:
    """Each state's pair tables ``[B, F, k, k]`` for its own scopes ``[B, F, 2]``: the
    distribution's ``scope_marginals`` of every pair of agents (one list for every batch,
    so the circuit plans it once), gathered per state and transposed where a scope lists its
    agents in descending order."""
    n = num_agents
    first, second = scopes.unbind(-1)
    low, high = torch.minimum(first, second), torch.maximum(first, second)
    joint = dist.scope_marginals(list(itertools.combinations(range(n), 2)))  # [B', P, k, k]
    k = joint.shape[-1]
    joint = joint.expand(scopes.shape[0], *joint.shape[-3:])
    column = low * (2 * n - low - 1) // 2 + high - low - 1                # [B, F] pair index
    tables = joint.gather(1, column[..., None, None].expand(-1, -1, k, k))   # [B, F, k, k]
    return torch.where((first > second)[..., None, None], tables.transpose(-1, -2), tables)
