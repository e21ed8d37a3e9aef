"""Structural determinism of a validated node DAG: do the children of every sum have
pairwise disjoint supports? Linear in the edges on structured circuits (:class:`_Atoms`),
with an exact pairwise fallback (:class:`_Overlap`) that never misses an overlap."""

from __future__ import annotations

import itertools
import math
from operator import itemgetter

from circuits.nodes import Categorical, Node, Product, Sum

__all__ = ["is_deterministic"]


def is_deterministic(order: list[Node], kinds: list, sizes: list, is_factor: list) -> bool:
    """Structural determinism: the children of every sum have pairwise disjoint supports.

    Args: the nodes in ``order`` (children first) and per position its kind (0 leaf,
    1 product, 2 sum), scope size, and whether it is a child of some product.

    Decided by :class:`_Atoms` in time linear in the edges wherever the circuit is
    structured (the children of a sum decompose their scope the same way below, as in
    selective and mean-field circuits); other sums fall back to :class:`_Overlap`, which
    never misses an overlap. So this is a sufficient (not necessary) condition.
    """
    atoms = _Atoms()
    overlap = None
    size = 0
    for i in sorted(range(len(order)), key=sizes.__getitem__):     # stable: children first
        if sizes[i] != size:
            atoms.compress(order, is_factor)
            size = sizes[i]
        node = order[i]
        disjoint = atoms.add(node, kinds[i], i)
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

    def add(self, node: Node, kind: int, position: int) -> bool | None:
        """Record ``node`` (of ``kind``, at ``position`` in the order); for a sum, whether its
        children are pairwise disjoint (None: unknown)."""
        self.pending.append(position)
        known, intern = self.known, self.ids.setdefault
        if kind == 0:
            space = intern(("leaf", node.var), len(self.ids))
            self.known[node] = (space, frozenset([intern(("state", node.var, s), len(self.ids))
                                                  for s in node.support]))
            return True
        kids = list(map(known.get, node._children))
        if kind == 1:
            if len(kids) == 2 and None not in kids:   # the common case, without comprehensions
                (s1, a1), (s2, a2) = kids
                if s1 > s2:
                    s1, a1, s2, a2 = s2, a2, s1, a1
                if len(a1) == 1 == len(a2):
                    space = intern(("product", s1, s2), len(self.ids))
                    (x,), (y,) = a1, a2
                    known[node] = (space, frozenset((intern((space, x, y), len(self.ids)),)))
                    return True
            if None not in kids:
                # A space determines its scope, so ordering factors by space is canonical.
                if len(kids) == 2:
                    ordered = kids if kids[0][0] < kids[1][0] else kids[::-1]
                else:
                    ordered = sorted(kids, key=itemgetter(0))
                lengths = [len(a) for _, a in ordered]
                size = math.prod(lengths)
                if size <= self.limit:
                    space = intern(("product",) + tuple([sp for sp, _ in ordered]), len(self.ids))
                    if size == 1:
                        key = (space,) + tuple([min(a) for _, a in ordered])
                        known[node] = (space, frozenset((intern(key, len(self.ids)),)))
                    else:
                        tuples = itertools.product(*[sorted(a) for _, a in ordered])
                        known[node] = (space, frozenset([intern((space,) + t, len(self.ids))
                                                         for t in tuples]))
            return True
        if None in kids or len({space for space, _ in kids}) != 1:
            return None
        union = frozenset().union(*[a for _, a in kids])
        if len(union) <= self.limit:
            known[node] = (kids[0][0], union)
        return len(union) == sum([len(a) for _, a in kids])

    def compress(self, order: list, is_factor: list) -> None:
        """Merge the atoms that no node of the finished scope size tells apart.

        Only nodes that are factors (children of products over larger scopes) are read
        again; per scope and space, atoms in exactly the same of their sets become one atom,
        so a region of pairwise disjoint nodes ends with one atom per node.
        """
        families: dict = {}
        known = self.known
        for position in self.pending:
            node = order[position]
            if is_factor[position] and node in known:
                space, atoms = known[node]
                families.setdefault((node.scope, space), []).append(node)
        self.pending = []
        for (scope, space), nodes in families.items():
            sets = {known[n][1]: None for n in nodes}
            member: dict = {}
            for index, atoms in enumerate(sets):
                for atom in atoms:
                    member.setdefault(atom, []).append(index)
            new_space = self._id(("compressed", space, scope))
            renamed = {atom: self._id((new_space, tuple(ids))) for atom, ids in member.items()}
            for n in nodes:
                known[n] = (new_space, frozenset([renamed[a] for a in known[n][1]]))


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
