"""Brute-force reference for circuit queries, written independently of the engine.

The node DAG is evaluated directly in float64 numpy on every joint assignment: each node
becomes a table broadcastable to ``num_states`` (one axis per variable), giving the full
joint table ``[k_0, ..., k_{n-1}]``. Every query is then read off that table by plain
summation, indexing and argmax. Nothing here imports the compiled engine.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from circuits.nodes import Categorical, Node, Product, Sum


def topological(root: Node) -> list[Node]:
    """All nodes reachable from ``root``, children before parents, each once."""
    order: list[Node] = []
    seen: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in reversed(node.children))
    return order


def leaf_states(root: Node) -> tuple[int, ...]:
    """``num_states`` per variable, read off the leaves (variables must be 0..n-1)."""
    found: dict[int, int] = {}
    for node in topological(root):
        if isinstance(node, Categorical):
            assert found.setdefault(node.var, node.num_states) == node.num_states
    assert sorted(found) == list(range(len(found)))
    return tuple(found[v] for v in range(len(found)))


def node_tables(root: Node, num_states: Sequence[int]) -> dict[int, np.ndarray]:
    """Map ``id(node)`` to the node's value on every joint assignment (broadcastable)."""
    n = len(num_states)
    tables: dict[int, np.ndarray] = {}
    for node in topological(root):
        if isinstance(node, Categorical):
            shape = [1] * n
            shape[node.var] = node.num_states
            table = np.array([math.exp(v) for v in node.logits], dtype=np.float64).reshape(shape)
        elif isinstance(node, Product):
            table = np.ones([1] * n)
            for child in node.children:
                table = table * tables[id(child)]
        elif isinstance(node, Sum):
            table = np.zeros([1] * n)
            for w, child in zip(node.weights, node.children):
                table = table + w * tables[id(child)]
        else:
            raise TypeError(f"unknown node {node!r}")
        tables[id(node)] = table
    return tables


def joint_table(root: Node, num_states: Sequence[int] | None = None) -> np.ndarray:
    """The full joint ``p(x)`` as an array of shape ``num_states``."""
    num_states = tuple(num_states) if num_states is not None else leaf_states(root)
    table = node_tables(root, num_states)[id(root)]
    return np.broadcast_to(table, num_states).copy()


def _log(p: float) -> float:
    return math.log(p) if p > 0 else -math.inf


def assignments(num_states: Sequence[int]):
    """Every joint assignment, in C order of the joint table."""
    return itertools.product(*(range(k) for k in num_states))


def prob(joint: np.ndarray, x: Sequence[int]) -> float:
    """``p(x)`` with entries ``-1`` summed out."""
    index = tuple(slice(None) if v < 0 else int(v) for v in x)
    return float(np.sum(joint[index]))


def log_prob(joint: np.ndarray, x: Sequence[int]) -> float:
    return _log(prob(joint, x))


def marginals(joint: np.ndarray, max_states: int | None = None) -> np.ndarray:
    """``[num_vars, max_states]`` single-variable marginals, zero-padded."""
    n = joint.ndim
    max_states = max_states or max(joint.shape)
    out = np.zeros((n, max_states))
    for v in range(n):
        out[v, :joint.shape[v]] = joint.sum(axis=tuple(a for a in range(n) if a != v))
    return out


def scope_marginal(joint: np.ndarray, scope: Sequence[int],
                   max_states: int | None = None) -> np.ndarray:
    """Joint marginal of ``scope`` with axes in the order given, zero-padded to ``max_states``."""
    max_states = max_states or max(joint.shape)
    rest = tuple(a for a in range(joint.ndim) if a not in scope)
    table = joint.sum(axis=rest)
    kept = [a for a in range(joint.ndim) if a in scope]
    table = np.transpose(table, [kept.index(v) for v in scope])
    out = np.zeros((max_states,) * len(scope))
    out[tuple(slice(0, joint.shape[v]) for v in scope)] = table
    return out


def consistent_mask(num_states: Sequence[int], evidence: Sequence[int]) -> np.ndarray:
    """Boolean table: which joint assignments agree with ``evidence`` (-1 = free)."""
    mask = np.ones(tuple(num_states), dtype=bool)
    for v, e in enumerate(evidence):
        if e >= 0:
            keep = np.zeros(num_states[v], dtype=bool)
            keep[e] = True
            shape = [1] * len(num_states)
            shape[v] = num_states[v]
            mask &= keep.reshape(shape)
    return mask


def condition(joint: np.ndarray, evidence: Sequence[int]) -> np.ndarray:
    """The conditional joint ``p(x | evidence)``; zero on inconsistent assignments."""
    table = np.where(consistent_mask(joint.shape, evidence), joint, 0.0)
    total = table.sum()
    if total <= 0:
        raise ZeroDivisionError(f"evidence {list(evidence)} has probability zero")
    return table / total


def leave_one_out(joint: np.ndarray, x: Sequence[int]) -> np.ndarray:
    """``[num_vars]`` of ``log p(x_i | x_-i)`` for a complete assignment ``x``."""
    out = np.empty(joint.ndim)
    for v in range(joint.ndim):
        others = list(x)
        others[v] = -1
        out[v] = log_prob(joint, x) - log_prob(joint, others)
    return out


def entropy(joint: np.ndarray) -> float:
    p = joint[joint > 0]
    return float(-(p * np.log(p)).sum())


def mpe_set(joint: np.ndarray, evidence: Sequence[int] | None = None,
            rtol: float = 1e-9) -> tuple[float, set[tuple[int, ...]]]:
    """The largest ``p(x)`` over assignments consistent with ``evidence``, and every ``x``
    reaching it within ``rtol`` (ties are real: uniform leaves make many)."""
    table = joint if evidence is None else np.where(
        consistent_mask(joint.shape, evidence), joint, 0.0)
    best = float(table.max())
    winners = {tuple(int(i) for i in idx)
               for idx in zip(*np.nonzero(table >= best * (1 - rtol)))}
    return best, winners


def max_product_value(root: Node, evidence: Sequence[int] | None = None) -> float:
    """The max-product (Viterbi) value of the circuit: sums replaced by weighted max.

    It is the probability mass of one induced tree, so ``p(x) >= value`` for the assignment
    ``x`` that the tree selects; for a deterministic circuit it equals the MPE probability.
    """
    value: dict[int, float] = {}
    for node in topological(root):
        if isinstance(node, Categorical):
            probs = node.probs
            e = -1 if evidence is None else evidence[node.var]
            value[id(node)] = probs[e] if e >= 0 else max(probs)
        elif isinstance(node, Product):
            value[id(node)] = math.prod(value[id(c)] for c in node.children)
        else:
            value[id(node)] = max(w * value[id(c)] for w, c in zip(node.weights, node.children))
    return value[id(root)]


def semantically_deterministic(root: Node, num_states: Sequence[int] | None = None) -> bool:
    """Whether every sum node's children have pairwise disjoint supports (by enumeration)."""
    num_states = tuple(num_states) if num_states is not None else leaf_states(root)
    tables = node_tables(root, num_states)
    for node in topological(root):
        if isinstance(node, Sum):
            nonzero = [np.broadcast_to(tables[id(c)], num_states) > 0 for c in node.children]
            for a, b in itertools.combinations(nonzero, 2):
                if np.any(a & b):
                    return False
    return True
