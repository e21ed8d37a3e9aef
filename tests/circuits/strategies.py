"""Hypothesis strategies for random valid circuits over at most six variables.

A circuit is grown top-down from the full scope. Each scope becomes a leaf (one variable),
a product (a random partition of the scope into 2-3 parts) or a sum (2-3 children over the
same scope). A deterministic sum splits on one variable: child ``j`` is a product of a leaf
supported on the ``j``-th group of that variable's states and a sub-circuit over the rest.
Earlier nodes are reused under new parents (shared sub-circuits), sibling sums share one
child list with different weights (dense blocks), leaves come as full categoricals, restricted
supports or indicators, variables have 1-4 states, and weights range from uniform to
near-degenerate.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from hypothesis import strategies as st

from circuits.nodes import Categorical, Node, Product, Sum


@dataclass(frozen=True)
class RandomCircuit:
    """A generated root node with the facts the generator knows about it."""

    root: Node
    num_states: tuple[int, ...]
    deterministic: bool
    """Every sum was built by splitting on a variable (so it must be structurally deterministic)."""


def _probabilities(draw, m: int) -> list[float]:
    kind = draw(st.sampled_from(["uniform", "random", "random", "degenerate"]))
    if kind == "uniform" or m == 1:
        return [1.0 / m] * m
    if kind == "random":
        raw = draw(st.lists(st.floats(0.02, 1.0), min_size=m, max_size=m))
    else:
        eps = draw(st.sampled_from([1e-3, 1e-6, 1e-9]))
        raw = [eps] * m
        raw[draw(st.integers(0, m - 1))] = 1.0
    total = sum(raw)
    return [r / total for r in raw]


def _leaf(draw, var: int, k: int, states: list[int] | None = None) -> Categorical:
    """A categorical over ``var``; ``states`` forces its support."""
    if states is None:
        kind = draw(st.sampled_from(["full", "full", "support", "indicator"]))
        if kind == "indicator":
            return Categorical.indicator(var, draw(st.integers(0, k - 1)), k)
        if kind == "full":
            states = list(range(k))
        else:
            states = sorted(draw(st.sets(st.integers(0, k - 1), min_size=1, max_size=k)))
    form = draw(st.sampled_from(["uniform", "probs", "logits"]))
    if form == "uniform":
        return Categorical(var, k, support=states)
    probs = _probabilities(draw, len(states))
    if form == "probs":
        full = [0.0] * k
        for s, p in zip(states, probs):
            full[s] = p
        return Categorical(var, k, probs=full)
    shift = draw(st.floats(-5, 5))
    logits = [-math.inf] * k
    for s, p in zip(states, probs):
        logits[s] = math.log(p) + shift
    return Categorical(var, k, logits=logits, support=states)


def _sum(draw, children: list[Node]) -> Sum:
    weights = _probabilities(draw, len(children))
    if draw(st.booleans()):
        return Sum(children, weights=weights)
    return Sum(children, logits=[math.log(w) + 1.5 for w in weights])


def _partition(draw, items: list[int], parts: int) -> list[list[int]]:
    """Split ``items`` into ``parts`` non-empty groups at random."""
    order = draw(st.permutations(items))
    cuts = sorted(draw(st.sets(st.integers(1, len(order) - 1),
                               min_size=parts - 1, max_size=parts - 1)))
    bounds = [0, *cuts, len(order)]
    return [sorted(order[a:b]) for a, b in itertools.pairwise(bounds)]


class _Builder:
    def __init__(self, draw, num_states: tuple[int, ...], deterministic: bool, share: float):
        self.draw = draw
        self.ks = num_states
        self.deterministic = deterministic
        self.share = share
        self.made: dict[frozenset[int], list[Node]] = {}

    def node(self, scope: frozenset[int], depth: int, root: bool = False) -> Node:
        draw = self.draw
        pool = self.made.get(scope, [])
        if pool and draw(st.floats(0, 1)) < self.share:
            return draw(st.sampled_from(pool))
        kinds = ["product"] if len(scope) > 1 else [] if root else ["leaf"]
        if depth > 0:
            kinds += ["sum", "sum"]
        kind = draw(st.sampled_from(kinds))
        if kind == "leaf":
            (var,) = scope
            made = _leaf(draw, var, self.ks[var])
        elif kind == "product":
            parts = draw(st.integers(2, min(3, len(scope))))
            made = Product([self.node(frozenset(p), depth)
                            for p in _partition(draw, sorted(scope), parts)])
            if draw(st.integers(0, 9)) == 0:
                made = Product([made])
        elif self.deterministic or draw(st.integers(0, 2)) == 0:
            made = self.split_sum(scope, depth)
        else:
            made = _sum(draw, self.several(scope, depth - 1, draw(st.integers(1, 3))))
        self.made.setdefault(scope, []).append(made)
        return made

    def several(self, scope: frozenset[int], depth: int, count: int) -> list[Node]:
        """``count`` nodes over ``scope``: independent, or (sometimes) sibling sums over one
        child list with different weights, like the dense sum blocks of RAT-SPNs."""
        first = self.node(scope, depth)
        if isinstance(first, Sum) and len(first.children) > 1 and self.draw(st.booleans()):
            siblings = [_sum(self.draw, list(first.children)) for _ in range(count - 1)]
            self.made[scope].extend(siblings)
            return [first, *siblings]
        return [first, *(self.node(scope, depth) for _ in range(count - 1))]

    def split_sum(self, scope: frozenset[int], depth: int) -> Node:
        """A deterministic sum: children have disjoint supports on one variable."""
        draw = self.draw
        splittable = sorted(v for v in scope if self.ks[v] >= 2)
        if not splittable:
            return _sum(draw, [self.node(scope, depth - 1)])
        var = draw(st.sampled_from(splittable))
        k = self.ks[var]
        states = list(range(k))
        if k > 2 and draw(st.booleans()):
            states = sorted(draw(st.sets(st.sampled_from(states), min_size=2, max_size=k)))
        groups = _partition(draw, states, draw(st.integers(2, min(3, len(states)))))
        rest = scope - {var}
        subs = self.several(rest, depth - 1, len(groups)) if rest else [None] * len(groups)
        children: list[Node] = []
        for group, sub in zip(groups, subs):
            leaf = _leaf(draw, var, k, states=group)
            children.append(Product([leaf, sub]) if sub is not None else leaf)
        return _sum(draw, children)


@st.composite
def random_circuits(draw, min_vars: int = 1, max_vars: int = 6, max_states: int = 4,
                    deterministic: bool | None = None, max_depth: int = 3) -> RandomCircuit:
    """A random valid (smooth, decomposable) circuit over variables ``0..n-1``.

    ``deterministic=None`` draws either kind; ``True`` builds only split sums. The root is
    never a bare leaf (a one-leaf circuit has its own tests in ``test_queries``).
    """
    n = draw(st.integers(min_vars, max_vars))
    ks = tuple(draw(st.lists(st.integers(1, max_states), min_size=n, max_size=n)))
    det = draw(st.booleans()) if deterministic is None else deterministic
    builder = _Builder(draw, ks, det, share=draw(st.sampled_from([0.0, 0.3, 0.6])))
    root = builder.node(frozenset(range(n)), draw(st.integers(1, max(1, max_depth))), root=True)
    return RandomCircuit(root=root, num_states=ks, deterministic=det)


@st.composite
def evidences(draw, num_states: tuple[int, ...], min_observed: int = 0) -> list[int]:
    """A partial assignment: each variable observed (a state) or free (-1)."""
    out = [draw(st.sampled_from([-1, *range(k)])) for k in num_states]
    for v in draw(st.permutations(range(len(num_states))))[:min_observed]:
        if out[v] < 0:
            out[v] = draw(st.integers(0, num_states[v] - 1))
    return out
