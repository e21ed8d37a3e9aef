"""Structural analysis of a node DAG: one depth-first walk numbers the nodes (children
before parents); smoothness, decomposability and heights are then checked and computed once
per distinct child list (the sums of a dense region share one). Errors name a node by its
first path from the root, e.g. ``root.children[1].children[0]``. :func:`is_deterministic`:
do the children of every sum have pairwise disjoint supports?
"""

from __future__ import annotations

import gc
import itertools
import math
from dataclasses import dataclass
from operator import attrgetter, itemgetter

import numpy as np

from circuits.nodes import Categorical, CircuitError, Node, Product, Sum

__all__ = ["LEAF", "PRODUCT", "SUM", "Structure", "analyse", "is_deterministic"]

LEAF, PRODUCT, SUM = 0, 1, 2
_KINDS = {Categorical: LEAF, Product: PRODUCT, Sum: SUM}


@dataclass(frozen=True)
class Structure:
    """The validated facts about a node DAG. ``order``: every node once, children first
    (depth-first post-order); per position ``kinds`` (``LEAF``, ``PRODUCT``, ``SUM``),
    ``child_list`` (-1 for leaves; sums with one children tuple share a list) and
    ``heights``; list ``j`` holds ``list_members[list_start[j]:list_start[j] +
    list_size[j]]``; ``num_states`` per variable."""

    order: tuple[Node, ...]
    kinds: np.ndarray
    child_list: np.ndarray
    list_members: np.ndarray
    list_start: np.ndarray
    list_size: np.ndarray
    heights: np.ndarray
    num_states: tuple[int, ...]
    is_deterministic: bool


def analyse(root: Node) -> Structure:
    """Validate ``root``'s DAG and compute its structural facts; raise CircuitError if invalid."""
    if not isinstance(root, Node):
        raise CircuitError(f"Circuit: root must be a circuit node (Categorical, Sum or Product), "
                           f"got {type(root).__name__}")
    # no garbage collection during the walk: its many small containers live to the end
    collecting = gc.isenabled()
    gc.disable()
    try:
        walk = _Walk(root)
        order = walk.order
        num_states = _check_variables(walk, root)
        if walk.first_bad is not None:
            _check_smooth_decomposable(order[walk.first_bad], _first_paths(root))
        deterministic = is_deterministic(order, walk.kinds.tolist(), walk.sizes.tolist(),
                                         walk.is_factor.tolist())
    finally:
        if collecting:
            gc.enable()
    return Structure(order=tuple(order), kinds=walk.kinds, child_list=walk.child_list,
                     list_members=walk.list_members, list_start=walk.list_start,
                     list_size=walk.list_size, heights=walk.heights, num_states=num_states,
                     is_deterministic=deterministic)


class _Walk:
    """A depth-first post-order walk, then every node's facts in bulk (numpy over the flat
    child lists). ``first_bad``: the first node that is not smooth or not decomposable;
    ``special``: the positions of leaves and of unknown node types."""

    def __init__(self, root: Node):
        order = self.order = _post_order(root)
        kinds = list(map(_KINDS.get, map(type, order)))
        if None in kinds:
            kinds = [_kind(node) if kind is None else kind for node, kind in zip(order, kinds)]
        kind = self.kinds = np.asarray(kinds, dtype=np.int64)
        products = np.flatnonzero(kind == PRODUCT)
        sums = np.flatnonzero(kind == SUM)
        self.special = np.flatnonzero(kind <= 0).tolist()
        sum_kids = [order[p]._children for p in sums.tolist()]
        index_of: dict = {}
        sum_list = [index_of.setdefault(kids, len(index_of)) for kids in sum_kids]
        child_list = np.full(len(order), -1, dtype=np.int64)
        child_list[products] = np.arange(len(products))
        child_list[sums] = len(products) + np.asarray(sum_list, dtype=np.int64)
        pos = dict(zip(order, range(len(order))))
        tuples = [order[p]._children for p in products.tolist()] + list(index_of)
        length = np.fromiter(map(len, tuples), dtype=np.int64, count=len(tuples))
        flat = np.fromiter(map(pos.__getitem__, itertools.chain.from_iterable(tuples)),
                           dtype=np.int64, count=int(length.sum()))
        pointer = np.cumsum(length) - length
        self.list_members, self.list_start, self.list_size = flat, pointer, length
        self.child_list = child_list
        self.heights = _heights(child_list, flat, pointer, len(tuples))
        sizes = self.sizes = np.fromiter(map(len, map(attrgetter("_scope"), order)), dtype=np.int64,
                                         count=len(order))
        stop = int(pointer[len(products)]) if len(sums) else len(flat)   # product lists first
        self.is_factor = np.zeros(len(order), dtype=bool)
        self.is_factor[flat[:stop]] = True
        bad = []
        if len(products):                           # disjoint scopes: their sizes add up
            total = np.add.reduceat(sizes[flat[:stop]], pointer[:len(products)])
            bad.extend(products[total != sizes[products]].tolist())
        first_user = {}
        for p, index in zip(sums.tolist(), sum_list):
            first_user.setdefault(index, p)
        scope_of = attrgetter("_scope")
        for kids, p in zip(index_of, first_user.values()):
            first = kids[0]._scope
            if not all(map(first.__eq__, map(scope_of, kids))):
                bad.append(p)
        self.first_bad = min(bad) if bad else None


def _heights(child_list: np.ndarray, flat: np.ndarray, pointer: np.ndarray, num_lists: int) -> np.ndarray:
    """Per node, 0 for leaves and 1 + the largest child height otherwise."""
    if num_lists == 0:
        return np.zeros(len(child_list), dtype=np.int64)
    member = np.where(child_list < 0, num_lists, child_list)[flat]   # list of each list member
    height = np.zeros(num_lists + 1, dtype=np.int64)                 # last: no list, height 0
    while True:
        new = 1 + np.maximum.reduceat(height[member], pointer)
        if np.array_equal(new, height[:-1]):
            break
        height[:-1] = new
    return height[np.where(child_list < 0, num_lists, child_list)]


def _post_order(root: Node) -> list:
    """Every node once, children before parents; CircuitError on a cycle."""
    order: list = []
    done: dict = {root: False}              # node -> True when finished, False while open
    is_done = done.get
    shared: set = set()                     # long children tuples of finished nodes
    kids = _children(root, _kind(root))
    stack = [(root, kids, iter(kids))]
    while stack:
        node, kids, it = stack[-1]
        for child in it:
            state = is_done(child)
            if state:
                continue
            if state is not None:
                _first_paths(root)                  # raises the cycle error, with paths
                raise CircuitError(f"Circuit: cycle through node {child!r}")
            try:
                grandkids = child._children
            except AttributeError:
                grandkids = _children(child, _kind(child))
            if len(grandkids) > 4:
                if grandkids in shared or all(map(is_done, grandkids)):
                    shared.add(grandkids)
                    done[child] = True
                    order.append(child)
                    continue
            elif all(map(is_done, grandkids)):
                done[child] = True
                order.append(child)
                continue
            done[child] = False
            stack.append((child, grandkids, iter(grandkids)))
            break
        else:
            stack.pop()
            done[node] = True
            order.append(node)
            if len(kids) > 4:
                shared.add(kids)
    return order


def _kind(node: Node) -> int:
    """LEAF, PRODUCT or SUM (subclasses too), or -2 for an unknown node type."""
    kind = _KINDS.get(type(node))
    if kind is None:
        kind = next((k for cls, k in _KINDS.items() if isinstance(node, cls)), -2)
    return kind


def _children(node: Node, kind: int) -> tuple:
    return node._children if kind >= 0 else tuple(node.children)


def _first_paths(root: Node) -> dict:
    """node -> its first path from the root (depth-first); raises CircuitError on a cycle."""
    paths, state = {root: "root"}, {root: 1}    # state: 1 while on the stack, 2 when finished
    stack = [(root, iter(enumerate(root.children)))]
    while stack:
        node, it = stack[-1]
        index, child = next(it, (None, None))
        if child is None:
            stack.pop()
            state[node] = 2
            continue
        if state.get(child) == 1:
            raise CircuitError(f"Circuit: cycle through node {paths[node]} ({node!r})")
        if child not in state:
            paths[child] = f"{paths[node]}.children[{index}]"
            state[child] = 1
            stack.append((child, iter(enumerate(child.children))))
    return paths


def _check_variables(walk: _Walk, root: Node) -> tuple[int, ...]:
    first: dict[int, int] = {}                  # variable -> position of its first leaf
    order = walk.order
    for position in walk.special:
        node = order[position]
        if walk.kinds[position] != LEAF:
            raise CircuitError(f"Circuit: unknown node type {type(node).__name__} at "
                               f"{_first_paths(root)[node]}")
        known = order[first.setdefault(node.var, position)]
        if known.num_states != node.num_states:
            paths = _first_paths(root)
            raise CircuitError(f"Circuit: variable {node.var} has num_states={known.num_states} at "
                               f"{paths[known]} but num_states={node.num_states} at {paths[node]}")
    variables = sorted(root.scope)
    if variables != list(range(len(variables))):
        missing = sorted(set(range(max(variables) + 1)) - set(variables))
        raise CircuitError(f"Circuit: variables must be 0..num_vars-1; the root's scope "
                           f"{variables} is missing {missing}")
    return tuple(order[first[v]].num_states for v in variables)


def _check_smooth_decomposable(node: Node, paths: dict) -> None:
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


# --- structural determinism -----------------------------------------------------------
def is_deterministic(order: list[Node], kinds: list, sizes: list, is_factor: list) -> bool:
    """Whether the children of every sum have pairwise disjoint supports (a sufficient
    condition for determinism), for the nodes in ``order`` (children first) with per
    position kind, scope size and whether it is a child of some product: by
    :class:`_Atoms`, else pairwise by :class:`_Overlap`, which never misses an overlap."""
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
    """Supports as sets of disjoint *atoms*: a sum's children are pairwise disjoint iff
    their atom sets' sizes add up under union.

    Each node gets ``(space, atoms)``; atoms of one space are disjoint sets of the scope's
    assignments. A leaf's atoms are its states; a product's the tuples of its children's;
    a sum's the union of its children's (one space). :meth:`compress` merges atoms that no
    node of a finished scope size tells apart. A node whose atoms would exceed ``limit``
    or mix spaces is unknown.
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
        """Per scope and space of the finished size's factors, atoms in exactly the same of
        their sets become one atom."""
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
    """Whether two nodes over the same scope may share an assignment: exact where both
    decompose their scope the same way below, else per-variable projections (which can
    only over-report). Memoised on node pairs."""

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
