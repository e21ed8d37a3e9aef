"""The region tree: the layout of a circuit's plan built region by region over a binary
tree of variables (such as :func:`circuits.structures.selective`), read off the plan once
per circuit, on first use.

A leaf region holds the indicators of one variable (node ``s`` is state ``s``); an inner
region the complete product of its two child regions' nodes, dealt into sums (each
product in exactly one sum) or kept as they are; the root is one sum. On this layout
``circuit.distribution(params)`` is a :class:`~circuits.tree_distribution.TreeDistribution`,
which answers its fast paths with a few batched ops per region; the log-weights are the
engine's (:func:`circuits.passes.normalise`, extended), indexed by parameter slot.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from circuits.compile import Plan
from circuits.nodes import Categorical, Product, Sum
from circuits.schedule import kept, moved

__all__ = ["RegionTree"]


@dataclass
class _Region:
    """A leaf region (``var``) or an inner region (two children), whose products are
    ``p = a * mR + b`` for left node ``a`` and right node ``b``. Summed: ``slots [m, G]``
    each sum's parameter slots (padding: log 0), product ``p`` is child ``pos_of_prod[p] %
    G`` of sum ``group_of_prod[p]``, ``prod_of_pos [m * G]`` the inverse (0 on padding).
    Unsummed: node ``i`` is product ``prod_of_pos[i]``, ``pos_of_prod`` the inverse."""

    scope: tuple[int, ...]                  # variables, left child's then right child's
    num_nodes: int
    var: int = -1                           # leaf: the variable (node s: the indicator of s)
    left: "_Region | None" = None
    right: "_Region | None" = None
    summed: bool = False
    slots: torch.Tensor | None = None
    pos_of_prod: torch.Tensor | None = None
    prod_of_pos: torch.Tensor | None = None
    group_of_prod: torch.Tensor | None = None
    table_pos: torch.Tensor | None = None     # summed: [P] column of the flat log-weights
    pad_pos: torch.Tensor | None = None       # summed: [m * G] the same for slots (padding: log 0)
    left_slot: torch.Tensor | None = None     # summed: [P] g * (mL + mR) + a for (a, b) in g
    right_slot: torch.Tensor | None = None    # summed: [P] g * (mL + mR) + mL + b
    in_order: bool = False                    # unsummed: prod_of_pos is the identity
    weight_index: int = 0                     # summed: its piece of the tree's weights

    @property
    def is_leaf(self) -> bool:
        return self.left is None

    @property
    def width(self) -> int:
        return self.slots.shape[1]


class _Layout(Exception):
    """The circuit is not a binary region tree of indicators."""


class RegionTree:
    """The region-tree layout of a circuit, with its index tensors (per device).

    ``root_pos [m_top]`` and each region's
    ``table_pos`` / ``pad_pos`` are slots of the extended log-parameters ``[B, P + 2]``
    (``P``: log 0, ``P + 1``: log 1).
    """

    def __init__(self, plan: Plan, root: _Region, root_pos: torch.Tensor,
                 regions: list[_Region]):
        self.plan, self.root, self.root_pos = plan, root, root_pos
        self.regions = regions  # children before parents
        self.summed = [r for r in regions if r.summed]
        self.max_width = max((r.width for r in self.summed), default=1)  # children of a sum
        # the root's children, then every summed region's products: one gather of all weights
        self.weight_pos = torch.cat([root_pos] + [r.table_pos for r in self.summed])
        self.weight_sizes = [len(root_pos)] + [len(r.table_pos) for r in self.summed]
        for i, r in enumerate(self.summed):
            r.weight_index = i + 1
        self.num_vars, self.num_params, self.num_states = plan.num_vars, plan.num_params, plan.max_states
        self._devices: dict = {root_pos.device: self}
        self.lca = {}                       # (i, j) -> (lowest common region, i on its right)
        for region in (r for r in regions if not r.is_leaf):
            for i, j in itertools.product(region.left.scope, region.right.scope):
                self.lca[(i, j)], self.lca[(j, i)] = (region, False), (region, True)
        self.leaves = sorted((r for r in regions if r.is_leaf), key=lambda r: r.var)
        self._pair_plans: dict = {}
        # the summed regions in the order a descent from the root meets them (right child
        # first): the order in which sampling draws their noise, after the root sum's
        self.draw_order, stack = [], [root]
        while stack:
            region = stack.pop()
            if not region.is_leaf:
                self.draw_order += [region] if region.summed else []
                stack += [region.left, region.right]

    @classmethod
    def from_plan(cls, plan: Plan) -> RegionTree | None:
        """The layout of the compiled ``plan`` (on the CPU), or ``None`` when its circuit is
        not a binary region tree of indicator leaves with a sum at the root."""
        try:
            return _build(plan)
        except _Layout:
            return None

    @classmethod
    def from_circuit(cls, circuit) -> RegionTree | None:
        """The region-tree layout of a :class:`~circuits.Circuit` (on the CPU; ``.to``
        moves it), or None."""
        return circuit._tree_on(torch.device("cpu"))

    def pair_plan(self, scopes: tuple) -> tuple[list, torch.Tensor]:
        """For pair scopes: the lowest common regions they need, as ``(region, pairs)``, and
        the columns ``[len(scopes) * k * k]`` of their concatenated tables giving each
        scope's table in its own axis order. ``pairs``: None (all the region's pairs), or
        the positions ``(left [P], right [P])`` of the pairs asked for where they are at most
        a quarter of the region's."""
        return kept(self._pair_plans, scopes, lambda: self._plan(scopes))

    def _plan(self, scopes: tuple) -> tuple[list, torch.Tensor]:
        k, device = self.num_states, self.root_pos.device
        asked: dict = {}                    # id(region) -> (region, {(a, b): rank})
        for i, j in scopes:
            region, flipped = self.lca[(i, j)]
            a, b = (j, i) if flipped else (i, j)   # a in the left child, b in the right
            pairs = asked.setdefault(id(region), (region, {}))[1]
            pairs.setdefault((region.left.scope.index(a), region.right.scope.index(b)),
                             len(pairs))
        needed, base, some, offset = [], {}, set(), 0
        for region, pairs in asked.values():
            sl, sr = len(region.left.scope), len(region.right.scope)
            if 4 * len(pairs) <= sl * sr:
                ranked = sorted(pairs, key=pairs.get)
                needed.append((region, (torch.tensor([a for a, _ in ranked], device=device),
                                        torch.tensor([b for _, b in ranked], device=device))))
                some.add(id(region))
                size = len(pairs) * k * k
            else:
                needed.append((region, None))
                size = sl * sr * k * k
            base[id(region)] = offset
            offset += size
        index = []
        for i, j in scopes:
            region, flipped = self.lca[(i, j)]
            a, b = (j, i) if flipped else (i, j)
            la, rb = region.left.scope.index(a), region.right.scope.index(b)
            pairs, sr = asked[id(region)][1], len(region.right.scope)
            if id(region) in some:
                corner, row = base[id(region)] + pairs[(la, rb)] * k * k, k
            else:
                corner, row = base[id(region)] + la * k * sr * k + rb * k, sr * k
            for u in range(k):          # u: value of the scope's first variable
                for v in range(k):
                    x, y = (v, u) if flipped else (u, v)
                    index.append(corner + x * row + y)
        return needed, torch.tensor(index, device=device)

    def to(self, device) -> RegionTree:
        device = torch.device(device)
        return kept(self._devices, device, lambda: self._moved(device))

    def _moved(self, device: torch.device) -> RegionTree:
        copies: dict = {}
        for r in self.regions:                      # children before parents
            copies[id(r)] = _Region(**{name: moved(value, device) for name, value in vars(r).items()
                                       if name not in ("left", "right")},
                                    left=copies.get(id(r.left)), right=copies.get(id(r.right)))
        tree = RegionTree(self.plan.to(device), copies[id(self.root)],
                          self.root_pos.to(device), [copies[id(r)] for r in self.regions])
        tree._devices = self._devices
        return tree

    def draw_noise(self, rows: int, generator: torch.Generator | None = None,
                   dtype: torch.dtype | None = None, device=None) -> list[torch.Tensor]:
        """The uniforms that sampling ``rows`` joint draws takes, in the order
        :meth:`TreeDistribution.sample` draws them: the root sum's ``[rows, m_top]``, then
        each summed region's ``[rows, G]`` (``draw_order``)."""
        widths = [len(self.root_pos)] + [r.width for r in self.draw_order]
        return [torch.rand(rows, w, generator=generator, dtype=dtype, device=device)
                for w in widths]


def _build(plan: Plan) -> RegionTree:
    slot_of: dict = {}                     # (sum id, child id) -> slot, once the layout fits
    k, num_params = plan.max_states, plan.num_params
    pad, one = num_params, num_params + 1  # columns appended to params: log 0 and log 1
    regions: list[_Region] = []

    def sum_slots(node: Sum, children: list | None = None) -> list[int]:
        if len(node.children) == 1:
            return [one]
        if not slot_of:
            slot_of.update(((n, c), p) for p, (n, c) in enumerate(zip(
                plan.param_node.tolist(), plan.param_child.tolist())) if n >= 0)
        nid = plan.node_of[node]
        return [slot_of[(nid, plan.node_of[c])] for c in children or node.children]

    def by_state(nodes: list) -> list:
        """A leaf region's indicators ordered by state (node s is state s), else ``nodes``."""
        if all(isinstance(n, Categorical) and len(n.support) == 1 for n in nodes):
            return sorted(nodes, key=lambda n: n.support[0])
        return nodes

    def region(nodes: list) -> _Region:
        if all(isinstance(n, Categorical) for n in nodes):
            states = [n.support[0] if len(n.support) == 1 else -1 for n in nodes]
            if (len({n.var for n in nodes}) != 1 or states != list(range(k))
                    or any(n.num_states != k for n in nodes)):
                raise _Layout
            r = _Region(scope=(nodes[0].var,), num_nodes=len(nodes), var=nodes[0].var)
            regions.append(r)
            return r
        if all(isinstance(n, Product) for n in nodes):
            groups, summed = [[n] for n in nodes], False
        elif all(isinstance(n, Sum) and all(isinstance(c, Product) for c in n.children)
                 for n in nodes):
            groups, summed = [list(n.children) for n in nodes], True
        else:
            raise _Layout
        products = [p for g in groups for p in g]
        if any(len(p.children) != 2 for p in products):
            raise _Layout
        lefts = by_state(list(dict.fromkeys(p.children[0] for p in products)))
        rights = by_state(list(dict.fromkeys(p.children[1] for p in products)))
        ml, mr = len(lefts), len(rights)
        if len({(p.children[0], p.children[1]) for p in products}) != len(products) or \
                len(products) != ml * mr:
            raise _Layout
        left, right = region(lefts), region(rights)
        if set(left.scope) & set(right.scope):
            raise _Layout
        a_of = {n: i for i, n in enumerate(lefts)}
        b_of = {n: i for i, n in enumerate(rights)}
        number = [a_of[p.children[0]] * mr + b_of[p.children[1]] for p in products]
        r = _Region(scope=left.scope + right.scope, num_nodes=len(nodes), left=left,
                    right=right, summed=summed)
        if summed:
            width = max(len(g) for g in groups)
            rows = [sum_slots(n) for n in nodes]
            r.slots = torch.tensor([row + [pad] * (width - len(row)) for row in rows])
            r.pos_of_prod = torch.empty(len(products), dtype=torch.long)
            r.prod_of_pos = torch.zeros(len(nodes) * width, dtype=torch.long)
            i = 0
            for g, group in enumerate(groups):
                for c in range(len(group)):
                    r.pos_of_prod[number[i]] = g * width + c
                    r.prod_of_pos[g * width + c] = number[i]
                    i += 1
            r.group_of_prod = torch.div(r.pos_of_prod, width, rounding_mode="floor")
            index = torch.arange(len(products))
            r.left_slot = r.group_of_prod * (ml + mr) + torch.div(index, mr, rounding_mode="floor")
            r.right_slot = r.group_of_prod * (ml + mr) + ml + index % mr
        else:
            r.prod_of_pos = torch.tensor(number)
            r.pos_of_prod = r.prod_of_pos.argsort()
            r.in_order = number == list(range(len(number)))
        regions.append(r)
        return r

    root_node = plan.nodes[plan.root - 1]
    if not isinstance(root_node, Sum):
        raise _Layout
    top_nodes = by_state(list(root_node.children))
    top = region(top_nodes)
    if sorted(top.scope) != list(range(plan.num_vars)):
        raise _Layout
    root_row = sum_slots(root_node, top_nodes)
    for r in regions:
        if r.summed:
            r.pad_pos = r.slots.flatten()
            r.table_pos = r.pad_pos[r.pos_of_prod]
    return RegionTree(plan, top, torch.tensor(root_row), regions)
