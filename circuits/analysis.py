"""Structural analysis of a node DAG: traversal, validation and structural properties.

Everything here works on nodes only (no tensors). Nodes are named in error messages by
their first path from the root, e.g. ``root.children[1].children[0]``, so a user can
find the offending node in the code that built it.
"""

from __future__ import annotations

import itertools
import math
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
    stack = [(root, iter(enumerate(root.children)))]
    state[root] = 1
    while stack:
        node, it = stack[-1]
        index, child = next(it, (None, None))
        if child is None:
            stack.pop()
            state[node] = 2
            order.append(node)
            continue
        if state.get(child) == 1:
            raise CircuitError(f"Circuit: cycle through node {paths[node]} ({node!r})")
        if child not in state:
            paths[child] = f"{paths[node]}.children[{index}]"
            state[child] = 1
            stack.append((child, iter(enumerate(child.children))))
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

    Decided by :class:`_Atoms` in time linear in the edges wherever the circuit is
    structured (the children of a sum decompose their scope the same way below, as in
    selective and mean-field circuits); other sums fall back to :class:`_Overlap`, which
    never misses an overlap. So this is a sufficient (not necessary) condition.
    """
    atoms = _Atoms()
    factors = {child for node in order if isinstance(node, Product) for child in node.children}
    overlap = None
    sizes = [len(node.scope) for node in order]
    size = 0
    for i in sorted(range(len(order)), key=sizes.__getitem__):     # stable: children first
        node = order[i]
        if sizes[i] != size:
            atoms.compress(factors)
            size = sizes[i]
        disjoint = atoms.add(node)
        if disjoint is None:                       # unstructured sum: pairwise fallback
            overlap = overlap or _Overlap()
            kids = node.children
            disjoint = not any(overlap(kids[a], kids[b])
                               for a in range(len(kids)) for b in range(a + 1, len(kids)))
        if not disjoint:
            return False
    return True


class _Atoms:
    """Supports as sets of disjoint *atoms*, so a sum's children are pairwise disjoint iff
    their atom sets are (sizes add up under union): linear in the edges.

    Each node gets ``(space, atoms)``: atoms of one space are pairwise disjoint parts of the
    scope's assignments, so two nodes of one space overlap iff they share an atom. A leaf's
    atoms are its states (space: its variable); a product's are the tuples of its
    children's atoms (space: the tuple of its children's spaces); a sum's are the union of
    its children's, when they share a space. Once every node over a scope is known, nodes
    of one space whose atom sets are pairwise equal or disjoint (each region of a selective
    circuit) get one atom per distinct set, which keeps products from multiplying sizes.
    A node whose atoms would exceed ``limit`` or mix spaces is unknown (None).
    """

    def __init__(self, limit: int = 4096):
        self.limit = limit
        self.known: dict = {}        # node -> (space, frozenset of atom ids)
        self.ids: dict = {}          # interned atoms and spaces -> int
        self.pending: list = []      # nodes over the current scope size

    def _id(self, key) -> int:
        return self.ids.setdefault(key, len(self.ids))

    def add(self, node: Node) -> bool | None:
        """Record ``node``; for a sum, whether its children are pairwise disjoint (None: unknown)."""
        self.pending.append(node)
        if isinstance(node, Categorical):
            space = self._id(("leaf", node.var))
            self.known[node] = (space, frozenset(self._id(("state", node.var, s)) for s in node.support))
            return True
        known = self.known
        kids = [known.get(child) for child in node.children]
        if isinstance(node, Product):
            if all(kids):
                # A space determines its scope, so ordering factors by space is canonical.
                ordered = sorted(kids, key=lambda kid: kid[0])
                size = math.prod(len(a) for _, a in ordered)
                if size <= self.limit:
                    space = self._id(("product",) + tuple(sp for sp, _ in ordered))
                    if size == 1:
                        atom = self._id((space,) + tuple(next(iter(a)) for _, a in ordered))
                        known[node] = (space, frozenset((atom,)))
                    else:
                        tuples = itertools.product(*(sorted(a) for _, a in ordered))
                        known[node] = (space, frozenset(self._id((space,) + t) for t in tuples))
            return True
        if not all(kids) or len({space for space, _ in kids}) != 1:
            return None
        union = frozenset().union(*(a for _, a in kids))
        if len(union) <= self.limit:
            self.known[node] = (kids[0][0], union)
        return len(union) == sum(len(a) for _, a in kids)

    def compress(self, factors: set) -> None:
        """Merge the atoms that no node of the finished scope size tells apart.

        Only nodes that are ``factors`` (children of products over larger scopes) are read
        again; per scope and space, atoms in exactly the same of their sets become one atom,
        so a region of pairwise disjoint nodes ends with one atom per node.
        """
        families: dict = {}
        for node in self.pending:
            if node in factors and node in self.known:
                space, atoms = self.known[node]
                families.setdefault((node.scope, space), []).append(node)
        self.pending = []
        for (scope, space), nodes in families.items():
            sets = {self.known[n][1]: None for n in nodes}
            member: dict = {}
            for index, atoms in enumerate(sets):
                for atom in atoms:
                    member.setdefault(atom, []).append(index)
            new_space = self._id(("compressed", space, scope))
            renamed = {atom: self._id((new_space, tuple(ids))) for atom, ids in member.items()}
            for n in nodes:
                self.known[n] = (new_space, frozenset(renamed[a] for a in self.known[n][1]))


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
