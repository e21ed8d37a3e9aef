"""Maximising a factor-graph Q-function over joint actions, batched over states.

Two methods, both batched over the leading dimension with torch ops:

* variable elimination in the (max, +) semiring, with the min-fill elimination order of
  :func:`networkx.algorithms.approximation.treewidth_min_fill_in`. Exact; its cost is
  ``k ** (induced width + 1)`` per state for the largest intermediate table.
* max-plus message passing (loopy max-sum) with damping, for graphs whose induced width is
  too large. It is exact on trees after enough rounds but approximate on loopy graphs; the
  result is the best joint action (by ``FactorValues.evaluate``) decoded in any round, so
  it never gets worse with more rounds (anytime).

:meth:`factor_q.FactorValues.argmax` is the public entry point.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import networkx as nx
import torch
from networkx.algorithms.approximation import treewidth_min_fill_in

from factor_q.graph import FactorGraph

__all__ = ["MAX_TABLE_SIZE", "EliminationStep", "argmax", "eliminate", "elimination_plan",
           "table_size"]

#: Default limit on entries per state of an intermediate table for exact elimination.
MAX_TABLE_SIZE = 2**16

_METHODS = ("auto", "elimination", "max_plus")


class EliminationStep(NamedTuple):
    """Eliminate ``var`` by maximising the sum of factors ``inputs`` over it.

    Factors are numbered: agents' unary terms ``0..n-1``, then the graph's factors
    ``n..n+F-1``, then each step's output in step order. ``scope`` is the sorted union of the
    inputs' scopes (it contains ``var``); the output's scope is ``scope`` without ``var``.
    """

    var: int
    inputs: tuple[int, ...]
    scope: tuple[int, ...]


def elimination_order(graph: FactorGraph) -> list[int]:
    """Agents in a min-fill elimination order, read off networkx's tree decomposition.

    Bags are visited leaves first; each bag eliminates its agents that are not in its
    parent bag, so every intermediate scope lies inside one bag.
    """
    _, tree = treewidth_min_fill_in(graph.interaction_graph())
    root = next(iter(tree.nodes))
    parents = nx.dfs_predecessors(tree, root)
    order: list[int] = []
    done: set[int] = set()
    for bag in nx.dfs_postorder_nodes(tree, root):
        keep = parents[bag] if bag in parents else frozenset()
        new = sorted(bag - keep - done)
        order.extend(new)
        done.update(new)
    return order


@functools.lru_cache(maxsize=128)
def elimination_plan(graph: FactorGraph) -> tuple[EliminationStep, ...]:
    """The elimination steps for ``graph`` (computed once per graph and cached)."""
    scopes: list[frozenset[int]] = [frozenset((i,)) for i in range(graph.num_agents)]
    scopes += [frozenset(f) for f in graph.factors]
    active = set(range(len(scopes)))
    steps = []
    for var in elimination_order(graph):
        inputs = tuple(sorted(f for f in active if var in scopes[f]))
        union = frozenset().union(*(scopes[f] for f in inputs))
        steps.append(EliminationStep(var, inputs, tuple(sorted(union))))
        active.difference_update(inputs)
        active.add(len(scopes))
        scopes.append(union - {var})
    return tuple(steps)


def table_size(steps: tuple[EliminationStep, ...], num_actions: int) -> int:
    """Entries per state of the widest intermediate table along elimination ``steps``."""
    return num_actions ** max((len(step.scope) for step in steps), default=1)


def eliminate(values, steps: tuple[EliminationStep, ...]) -> torch.Tensor:
    """Exact argmax by variable elimination along ``steps`` (:func:`elimination_plan` of
    ``values.graph``); returns ``[B, n]`` actions."""
    batch, n, k = values.unary.shape
    tensors: list[torch.Tensor] = [values.unary[:, i] for i in range(n)]
    var_lists: list[tuple[int, ...]] = [(i,) for i in range(n)]
    for scope, table in zip(values.graph.factors, values.tables):
        perm = sorted(range(len(scope)), key=lambda p: scope[p])
        tensors.append(table.permute(0, *(1 + p for p in perm)))
        var_lists.append(tuple(sorted(scope)))
    best_given_rest = []
    for step in steps:
        total = sum(tensors[f].reshape((batch,) + tuple(k if v in var_lists[f] else 1
                                                        for v in step.scope))
                    for f in step.inputs)
        best, index = total.max(dim=1 + step.scope.index(step.var))
        tensors.append(best)
        var_lists.append(tuple(v for v in step.scope if v != step.var))
        best_given_rest.append(index)
    actions = values.unary.new_zeros((batch, n), dtype=torch.long)
    for step, index in zip(reversed(steps), reversed(best_given_rest)):
        rest = [v for v in step.scope if v != step.var]
        flat = torch.zeros(batch, dtype=torch.long, device=actions.device)
        for v in rest:
            flat = flat * k + actions[:, v]
        actions[:, step.var] = index.reshape(batch, k ** len(rest)).gather(
            1, flat[:, None]).squeeze(1)
    return actions


def _max_plus(values, iterations: int, damping: float) -> torch.Tensor:
    """Damped max-plus message passing with an anytime best; returns ``[B, n]`` actions."""
    unary = values.unary
    batch, n, k = unary.shape
    groups = []
    for scopes, tables in values.groups():
        index = scopes.expand(batch, *scopes.shape[-2:])                   # [B, F, order]
        gather = index.flatten(1)[..., None].expand(-1, -1, k)             # [B, F order, k]
        groups.append((index, gather, tables, unary.new_zeros(index.shape + (k,))))
    best_actions = unary.argmax(-1)
    best_q = values.evaluate(best_actions)
    for _ in range(iterations + 1):
        belief = unary
        for _, gather, _, messages in groups:
            belief = belief.scatter_add(1, gather, messages.flatten(1, 2))
        decoded = belief.argmax(-1)
        q = values.evaluate(decoded)
        better = q > best_q
        best_q = torch.where(better, q, best_q)
        best_actions = torch.where(better[:, None], decoded, best_actions)
        for g, (index, gather, tables, messages) in enumerate(groups):
            order = index.shape[-1]
            # variable -> factor, [B, F, order, k]
            incoming = belief.gather(1, gather).view(messages.shape) - messages
            incoming = incoming - incoming.mean(-1, keepdim=True)
            shaped = [incoming[:, :, p].reshape(incoming.shape[:2] + tuple(
                k if a == p else 1 for a in range(order))) for p in range(order)]
            total = tables + sum(shaped)
            new = torch.stack([(total - shaped[p]).amax(dim=tuple(2 + a for a in range(order)
                                                                  if a != p))
                               for p in range(order)], dim=2)
            new = new - new.mean(-1, keepdim=True)
            groups[g] = (index, gather, tables, damping * messages + (1 - damping) * new)
    return best_actions


def argmax(values, method: str = "auto", *, max_table_size: int = MAX_TABLE_SIZE,
           iterations: int = 50, damping: float = 0.5) -> tuple[torch.Tensor, bool]:
    """Best joint actions ``[B, n]`` of a ``FactorValues`` and whether they are exact.

    See :meth:`factor_q.FactorValues.argmax` for the arguments.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {list(_METHODS)}, got {method!r}")
    if isinstance(max_table_size, bool) or not isinstance(max_table_size, int) or max_table_size < 1:
        raise ValueError(f"max_table_size must be a positive int, got {max_table_size!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be a non-negative int, got {iterations!r}")
    if not 0.0 <= damping < 1.0:
        raise ValueError(f"damping must be in [0, 1), got {damping!r}")
    with torch.no_grad():
        if values.pair_scopes is not None and method == "elimination":
            raise ValueError("variable elimination needs one factor graph for every state; "
                             "these values have a graph per state (a NearestGraph): use "
                             "method='max_plus'")
        if method == "max_plus" or values.pair_scopes is not None:
            return _max_plus(values, iterations, damping), False
        steps = elimination_plan(values.graph)
        size = table_size(steps, values.num_actions)
        widest = max(len(step.scope) for step in steps)
        if size <= max_table_size:
            return eliminate(values, steps), True
        if method == "elimination":
            raise ValueError(f"variable elimination needs a table of {values.num_actions}**"
                             f"{widest} = {size} entries per state, more than max_table_size="
                             f"{max_table_size}; raise it or use method='max_plus'")
        return _max_plus(values, iterations, damping), False
