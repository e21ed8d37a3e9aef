"""Structural analysis of a node DAG: traversal, validation and structural properties.

Everything here works on nodes only (no tensors). Nodes are named in error messages by
their first path from the root, e.g. ``root.children[1].children[0]``, so a user can
find the offending node in the code that built it.
"""

from __future__ import annotations

from dataclasses import dataclass

from circuits.errors import CircuitError
from circuits.nodes import Categorical, Node, Product, Sum

__all__ = ["Structure", "analyse"]


@dataclass(frozen=True)
class Structure:
    """The validated facts about a node DAG.

    Attributes:
        order: every node once, children before parents (the root last).
        paths: node -> its first path from the root, for error messages.
        heights: node -> 0 for leaves, 1 + max child height otherwise.
        num_states: per variable, its number of states (variables are 0..num_vars-1).
        is_deterministic: every sum's children have pairwise disjoint support on some
            variable (a sufficient condition for determinism, checked structurally).
    """

    order: tuple[Node, ...]
    paths: dict
    heights: dict
    num_states: tuple[int, ...]
    is_deterministic: bool


def analyse(root: Node) -> Structure:
    """Validate ``root``'s DAG and compute its structural facts; raise CircuitError if invalid."""
    if not isinstance(root, Node):
        raise CircuitError(f"Circuit: root must be a circuit node (Categorical, Sum or Product), "
                           f"got {type(root).__name__}")
    order, paths = _topological_order(root)
    num_states = _check_variables(order, paths, root)
    _check_smooth_decomposable(order, paths)
    heights: dict = {}
    for node in order:
        heights[node] = 1 + max(heights[c] for c in node.children) if node.children else 0
    return Structure(order=tuple(order), paths=paths, heights=heights, num_states=num_states,
                     is_deterministic=_is_deterministic(order))


def _topological_order(root: Node) -> tuple[list[Node], dict]:
    """Iterative DFS post-order; raises CircuitError on a cycle."""
    order: list[Node] = []
    paths = {root: "root"}
    state: dict = {}  # node -> 1 while on the stack, 2 when finished
    stack = [(root, iter(root.children))]
    state[root] = 1
    while stack:
        node, it = stack[-1]
        child = next(it, None)
        if child is None:
            stack.pop()
            state[node] = 2
            order.append(node)
            continue
        if state.get(child) == 1:
            raise CircuitError(f"Circuit: cycle through node {paths[node]} ({node!r})")
        if child not in state:
            index = node.children.index(child)
            paths[child] = f"{paths[node]}.children[{index}]"
            state[child] = 1
            stack.append((child, iter(child.children)))
    return order, paths


def _check_variables(order: list[Node], paths: dict, root: Node) -> tuple[int, ...]:
    num_states: dict[int, int] = {}
    where: dict[int, str] = {}
    for node in order:
        if isinstance(node, Categorical):
            known = num_states.setdefault(node.var, node.num_states)
            where.setdefault(node.var, paths[node])
            if known != node.num_states:
                raise CircuitError(
                    f"Circuit: variable {node.var} has num_states={known} at {where[node.var]} "
                    f"but num_states={node.num_states} at {paths[node]}")
        elif not isinstance(node, (Sum, Product)):
            raise CircuitError(f"Circuit: unknown node type {type(node).__name__} at {paths[node]}")
    variables = sorted(root.scope)
    if variables != list(range(len(variables))):
        missing = sorted(set(range(max(variables) + 1)) - set(variables))
        raise CircuitError(f"Circuit: variables must be 0..num_vars-1; the root's scope "
                           f"{variables} is missing {missing}")
    return tuple(num_states[v] for v in variables)


def _check_smooth_decomposable(order: list[Node], paths: dict) -> None:
    for node in order:
        if isinstance(node, Sum):
            first = node.children[0].scope
            for i, child in enumerate(node.children[1:], start=1):
                if child.scope != first:
                    raise CircuitError(
                        f"Circuit: sum node {paths[node]} is not smooth: child 0 has scope "
                        f"{sorted(first)} but child {i} has scope {sorted(child.scope)} "
                        f"(differing variables {sorted(first ^ child.scope)})")
        elif isinstance(node, Product):
            seen: dict[int, int] = {}
            for i, child in enumerate(node.children):
                for var in child.scope:
                    if var in seen:
                        shared = sorted(child.scope & node.children[seen[var]].scope)
                        raise CircuitError(
                            f"Circuit: product node {paths[node]} is not decomposable: children "
                            f"{seen[var]} and {i} share variables {shared}")
                    seen[var] = i


def _is_deterministic(order: list[Node]) -> bool:
    """Structural determinism: the children of every sum have pairwise disjoint supports.

    Supports are compared by :class:`_Overlap`, which never misses an overlap, so this is
    a sufficient (not necessary) condition.
    """
    overlap = _Overlap()
    for node in order:
        if isinstance(node, Sum):
            kids = node.children
            if any(overlap(kids[i], kids[j]) for i in range(len(kids)) for j in range(i + 1, len(kids))):
                return False
    return True


class _Overlap:
    """Whether two nodes over the same scope may share an assignment in their supports.

    Exact when both nodes decompose their scope the same way below (structured
    decomposability, as in selective and mean-field circuits): leaves compare supports,
    a sum overlaps if any child does, two products with the same partition of the scope
    overlap if every aligned pair of factors does. Otherwise it falls back to comparing
    per-variable projections, which can only over-report overlap. Memoised on node pairs.
    """

    def __init__(self):
        self._memo: dict = {}
        self._projections: dict = {}

    def __call__(self, a: Node, b: Node) -> bool:
        if a is b:
            return True
        key = (id(a), id(b)) if id(a) < id(b) else (id(b), id(a))
        if key not in self._memo:
            self._memo[key] = self._compute(a, b)
        return self._memo[key]

    def _compute(self, a: Node, b: Node) -> bool:
        if isinstance(a, Categorical) and isinstance(b, Categorical):
            return bool(set(a.support) & set(b.support))
        if isinstance(a, Sum):
            return any(self(child, b) for child in a.children)
        if isinstance(b, Sum):
            return any(self(a, child) for child in b.children)
        if isinstance(a, Product) and isinstance(b, Product):
            by_scope = {child.scope: child for child in b.children}
            if len(by_scope) == len(a.children) and all(c.scope in by_scope for c in a.children):
                return all(self(child, by_scope[child.scope]) for child in a.children)
        pa, pb = self._projection(a), self._projection(b)
        return all(pa[v] & pb[v] for v in pa)

    def _projection(self, node: Node) -> dict:
        """Per variable, the states it takes anywhere in the node's support (a superset)."""
        if node not in self._projections:
            if isinstance(node, Categorical):
                out = {node.var: frozenset(node.support)}
            elif isinstance(node, Product):
                out = {}
                for child in node.children:
                    out.update(self._projection(child))
            else:
                out = {}
                for child in node.children:
                    for var, states in self._projection(child).items():
                        out[var] = out.get(var, frozenset()) | states
            self._projections[node] = out
        return self._projections[node]
