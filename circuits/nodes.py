"""Immutable circuit nodes (no tensors; compared and hashed by identity, so a node used as
the child of several parents is a shared sub-circuit), and the package's errors.

Example::

    >>> from circuits import Categorical, Sum, Product
    >>> a0 = Categorical(var=0, num_states=3, probs=[.2, .3, .5])
    >>> a1 = Categorical(var=1, num_states=3, support=[0, 2])
    >>> root = Sum([Product([a0, a1]), Product([Categorical(0, 3), Categorical(1, 3)])],
    ...            weights=[.4, .6])
    >>> sorted(root.scope)
    [0, 1]
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

__all__ = ["ApproximateMPEWarning", "Categorical", "CircuitError", "Node",
           "NotDeterministicError", "Product", "Sum"]


class CircuitError(ValueError):
    """An invalid circuit structure or parameter; the message names the node and variables."""


class NotDeterministicError(ValueError):
    """A query that is exact only on deterministic circuits was asked of a non-deterministic one."""


class ApproximateMPEWarning(UserWarning):
    """``mode`` or ``mpe()`` of a circuit that is not (structurally) deterministic: the
    assignment of the most probable induced tree, not necessarily the most probable one."""


def _finite_floats(values: Sequence[float], what: str, owner: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise CircuitError(f"{owner}: {what} must be a sequence of numbers, got {values!r}") from None
    if any(math.isnan(v) for v in out):
        raise CircuitError(f"{owner}: {what} contains NaN: {list(out)}")
    return out


def _state_indices(support, owner: str) -> list[int]:
    """The integer states of ``support``; non-integers (``1.7``, ``True``) are an error."""
    try:
        if isinstance(support, (str, bytes)) or any(isinstance(s, bool) for s in support):
            raise TypeError
        return [operator.index(s) for s in support]
    except TypeError:
        raise CircuitError(f"{owner}: support must be a sequence of int states, "
                           f"got {support!r}") from None


def _logits_from_probs(probs: tuple[float, ...], what: str, owner: str) -> tuple[float, ...]:
    if any(p < 0 or math.isinf(p) for p in probs):
        raise CircuitError(f"{owner}: {what} must be finite and non-negative, got {list(probs)}")
    total = sum(probs)
    if total <= 0:
        raise CircuitError(f"{owner}: {what} must have positive total mass, got {list(probs)}")
    if abs(total - 1.0) > 1e-4:
        raise CircuitError(f"{owner}: {what} must sum to 1 (got sum {total:.6g}); "
                           f"pass logits=... for unnormalised scores")
    return tuple(math.log(p) if p > 0 else -math.inf for p in probs)


class Node:
    """Base class of circuit nodes. Immutable; equality and hashing are by identity."""

    __slots__ = ("_scope", "_children")

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} nodes are immutable (tried to set {name!r})")

    def _init(self, **fields) -> None:
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    # immutable structure is shared, not copied
    def __copy__(self) -> "Node":
        return self

    def __deepcopy__(self, memo: dict) -> "Node":
        return self

    def __setstate__(self, state) -> None:
        """Unpickling: pickle's ``(None, {slot: value})`` set past the immutability guard."""
        slots = state[1] if isinstance(state, tuple) else state
        self._init(**(slots or {}))

    @property
    def scope(self) -> frozenset[int]:
        """The variables this node is a distribution over."""
        return self._scope

    @property
    def children(self) -> tuple[Node, ...]:
        return self._children

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scope={sorted(self.scope)}, num_children={len(self.children)})"


class Categorical(Node):
    """A categorical input distribution over variable ``var`` with ``num_states`` states:
    ``probs`` (summing to 1) or unnormalised ``logits`` (``-inf``: outside the support), or
    uniform over ``support``. Its support states' log-probabilities are parameters (an
    indicator has none)."""

    __slots__ = ("var", "num_states", "support", "logits")

    def __init__(self, var: int, num_states: int, probs: Sequence[float] | None = None,
                 logits: Sequence[float] | None = None, support: Sequence[int] | None = None):
        owner = f"Categorical(var={var!r})"
        if isinstance(var, bool) or not isinstance(var, int) or var < 0:
            raise CircuitError(f"Categorical: var must be a non-negative int, got {var!r}")
        if isinstance(num_states, bool) or not isinstance(num_states, int) or num_states < 1:
            raise CircuitError(f"{owner}: num_states must be a positive int, got {num_states!r}")
        if probs is not None and logits is not None:
            raise CircuitError(f"{owner}: pass probs or logits, not both")
        scores = None
        if probs is not None:
            scores = _logits_from_probs(_finite_floats(probs, "probs", owner), "probs", owner)
        elif logits is not None:
            scores = _finite_floats(logits, "logits", owner)
            if any(v == math.inf for v in scores):
                raise CircuitError(f"{owner}: logits must not contain +inf, got {list(scores)}")
        if scores is not None and len(scores) != num_states:
            name = "probs" if probs is not None else "logits"
            raise CircuitError(f"{owner}: {name} must have num_states={num_states} entries, "
                               f"got {len(scores)}")
        if support is not None:
            states = sorted(set(_state_indices(support, owner)))
            if not states or states[0] < 0 or states[-1] >= num_states:
                raise CircuitError(f"{owner}: support must be a non-empty subset of "
                                   f"range({num_states}), got {list(support)!r}")
            if scores is not None and any(scores[s] != -math.inf
                                          for s in range(num_states) if s not in states):
                raise CircuitError(f"{owner}: probs/logits put mass outside support={states}")
        else:
            states = [s for s in range(num_states) if scores is None or scores[s] != -math.inf]
            if not states:
                raise CircuitError(f"{owner}: all states have zero probability")
        if scores is None:
            scores = tuple(0.0 if s in states else -math.inf for s in range(num_states))
        top = max(scores[s] for s in states)
        log_norm = top + math.log(sum(math.exp(scores[s] - top) for s in states))
        logits_n = tuple(scores[s] - log_norm if s in states else -math.inf
                         for s in range(num_states))
        self._init(_scope=frozenset((var,)), _children=(), var=var, num_states=num_states,
                   support=tuple(states), logits=logits_n)

    @classmethod
    def indicator(cls, var: int, value: int, num_states: int) -> Categorical:
        """A point mass on ``var == value`` (no learnable parameters)."""
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < num_states:
            raise CircuitError(f"Categorical.indicator(var={var!r}): value must be an int in "
                               f"range({num_states}), got {value!r}")
        return cls(var, num_states, support=[value])

    @property
    def probs(self) -> tuple[float, ...]:
        return tuple(math.exp(v) for v in self.logits)

    def __repr__(self) -> str:
        return f"Categorical(var={self.var}, num_states={self.num_states}, support={list(self.support)})"


class Sum(Node):
    """A mixture of children over one scope (smoothness), by ``weights`` summing to 1 or
    unnormalised ``logits`` (default uniform)."""

    __slots__ = ("log_weights",)

    def __init__(self, children: Sequence[Node], weights: Sequence[float] | None = None,
                 logits: Sequence[float] | None = None):
        children, scope = _check_children(children, "Sum")
        owner = f"Sum(scope={sorted(scope)})"
        if weights is not None and logits is not None:
            raise CircuitError(f"{owner}: pass weights or logits, not both")
        if weights is not None:
            scores = _logits_from_probs(_finite_floats(weights, "weights", owner), "weights", owner)
        elif logits is not None:
            scores = _finite_floats(logits, "logits", owner)
            if any(math.isinf(v) for v in scores):
                raise CircuitError(f"{owner}: logits must be finite, got {list(scores)}")
        else:
            scores = (0.0,) * len(children)
        if len(scores) != len(children):
            raise CircuitError(f"{owner}: got {len(scores)} weights for {len(children)} children")
        finite = [v for v in scores if v != -math.inf]
        top = max(finite)
        log_norm = top + math.log(sum(math.exp(v - top) for v in finite))
        self._init(_scope=scope, _children=children, log_weights=tuple(v - log_norm for v in scores))

    @property
    def weights(self) -> tuple[float, ...]:
        return tuple(math.exp(v) for v in self.log_weights)


class Product(Node):
    """A factorisation: the product of children over disjoint scopes (decomposability)."""

    __slots__ = ()

    def __init__(self, children: Sequence[Node]):
        children, scope = _check_children(children, "Product")
        self._init(_scope=scope, _children=children)


def _check_children(children: Sequence[Node], kind: str) -> tuple[tuple[Node, ...], frozenset]:
    """The children as a tuple, and the union of their scopes."""
    try:
        children = tuple(children)
    except TypeError:
        raise CircuitError(f"{kind}: children must be a sequence of nodes, got {children!r}") from None
    if not children:
        raise CircuitError(f"{kind}: needs at least one child, got an empty list")
    for i, child in enumerate(children):
        if not isinstance(child, Node):
            raise CircuitError(f"{kind}: child {i} is not a circuit node: {child!r}")
    return children, frozenset().union(*(c.scope for c in children))
