"""Build the upward pass's per-layer :class:`Program` from a compiled :class:`Plan` (once).

The plan numbers nodes and groups them (see :mod:`circuits.compile`); the program decides
how each layer is executed (see :mod:`circuits.upward` for the step kinds) and where each
node's value lives: ``(layer, row)`` of the layer tensors, or nowhere for the products that
an ``outer`` step fuses into its sums.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["Step", "Program", "build_program", "kept_structure"]


def kept_structure() -> torch.inference_mode:
    """The context that builds structure a circuit keeps across calls (index tensors made on
    first use by a query: plans, child lists, region trees): outside inference mode, so that
    a query first run under ``torch.inference_mode()`` (as policies act) leaves no inference
    tensor that a later query with a gradient would have to save for its backward."""
    return torch.inference_mode(False)


@dataclass
class Step:
    """One batched operation of a layer; ``children`` index the step's source tensor."""

    kind: str                          # "product" | "sum" | "dense" | "outer"
    sources: tuple                     # layer indices read (concatenated when several)
    children: torch.Tensor             # product [M, W]; sum [M, A]; dense [G, K]; outer [G, A]
    right: torch.Tensor | None = None  # outer: [G, A2]
    weights: torch.Tensor | None = None  # slots into logp_ext: sum [M, A]; dense/outer [G, M, K]
    products: torch.Tensor | None = None  # outer: node ids [G, A, A2] of the fused products
    piece: int | None = None           # dense/outer with contiguous slots: its piece of logp_ext

    def to(self, device) -> Step:
        def move(t):
            return None if t is None else t.to(device)
        return Step(self.kind, self.sources, move(self.children), move(self.right),
                    move(self.weights), move(self.products), self.piece)


@dataclass
class Program:
    """Steps per layer (layer 1 onwards) and how to read node values back by node id."""

    layers: list                       # list[list[Step]]
    root_layer: int
    root_pos: int
    node_index: torch.Tensor           # [N] row of each node id in cat(zero row, layers..., fused products...)
    outers: list = field(default_factory=list)  # (layer, step index) of every outer step
    cuts: tuple = ()                   # split sizes of logp_ext's P + 2 columns into pieces
    row_leaf: torch.Tensor = None      # [n_0] leaf index of each leaf-layer row (padding: 0)
    leaf_rows: torch.Tensor = None     # [L] leaf-layer row of each leaf
    leaf_table: torch.Tensor | None = None  # [V, Lv, K + 1] slots: the leaf layer by variable

    def to(self, device) -> Program:
        def move(t):
            return None if t is None else t.to(device)
        return Program([[s.to(device) for s in layer] for layer in self.layers], self.root_layer,
                       self.root_pos, self.node_index.to(device), list(self.outers), self.cuts,
                       self.row_leaf.to(device), self.leaf_rows.to(device), move(self.leaf_table))


def build_program(plan) -> Program:
    """The steps of every layer of ``plan`` and the node-id read-back index."""
    builder = _Builder(plan)
    for layer in plan.layers:
        builder.add_layer(layer)
    return builder.finish()


class _Builder:
    def __init__(self, plan):
        self.plan = plan
        n = plan.num_nodes
        self.layer = torch.full((n,), -1, dtype=torch.long)
        self.row = torch.full((n,), -1, dtype=torch.long)
        self.row_leaf, self.leaf_rows, self.leaf_table = _leaf_layout(plan)
        self.layer[1:plan.num_leaves + 1] = 0
        self.row[1:plan.num_leaves + 1] = self.leaf_rows
        self.sizes = [self.row_leaf.numel()]
        self.layers: list[list[Step]] = []
        self.outers: list = []
        products, parents = _products_and_parents(plan)
        self.fused = _fusable_blocks(plan, products, parents)
        self.virtual = torch.zeros(n, dtype=torch.bool)
        for block in self.fused.values():
            self.virtual[block[2].reshape(-1)] = True

    # --- layers ----------------------------------------------------------------------------
    def add_layer(self, groups) -> None:
        index = len(self.layers) + 1
        steps: list[Step] = []
        out_nodes: list[torch.Tensor] = []
        outer: dict = {}
        dense: dict = {}
        for group in groups:
            if group.kind == "product":
                self._products(group, steps, out_nodes)
            elif group.kind == "sum":
                children = torch.where(group.edge_mask, group.children, group.children[:, :1])
                steps.append(self._step("sum", children, weights=group.weights))
                out_nodes.append(group.nodes)
            else:
                blocks, width = group.children.shape
                per_block = (group.stop - group.start) // blocks
                weights = group.weights.view(blocks, per_block, width)
                for g in range(blocks):
                    nodes = group.start + g * per_block + torch.arange(per_block)
                    key = (group.start, g)
                    if key in self.fused:
                        left, right, products, columns = self.fused[key]
                        w = torch.empty_like(weights[g])
                        w[:, columns] = weights[g]
                        bucket = outer.setdefault((per_block, left.numel(), right.numel()), [])
                        bucket.append((nodes, left, right, w, products))
                    else:
                        dense.setdefault((per_block, width), []).append(
                            (nodes, group.children[g], weights[g]))
        for items in dense.values():
            steps.append(self._step("dense", torch.stack([c for _, c, _ in items]),
                                    weights=torch.stack([w for _, _, w in items])))
            out_nodes.append(torch.cat([n for n, _, _ in items]))
        for items in outer.values():
            self.outers.append((index, len(steps)))
            steps.append(self._step("outer", torch.stack([i[1] for i in items]),
                                    right=torch.stack([i[2] for i in items]),
                                    weights=torch.stack([i[3] for i in items]),
                                    products=torch.stack([i[4] for i in items])))
            out_nodes.append(torch.cat([i[0] for i in items]))
        nodes = torch.cat(out_nodes) if out_nodes else torch.zeros(0, dtype=torch.long)
        self.layer[nodes] = index
        self.row[nodes] = torch.arange(nodes.numel())
        self.sizes.append(nodes.numel())
        self.layers.append(steps)

    def _products(self, group, steps, out_nodes) -> None:
        keep = ~self.virtual[group.start:group.stop]
        widths = group.edge_mask.sum(1)
        for width in torch.unique(widths[keep]).tolist():
            rows = keep & (widths == width)
            steps.append(self._step("product", group.children[rows, :width]))
            out_nodes.append(group.nodes[rows])

    def _step(self, kind, children, right=None, weights=None, products=None) -> Step:
        """A step reading ``children`` (and ``right``) node ids, translated to source rows."""
        ids = children if right is None else torch.cat([children.reshape(-1), right.reshape(-1)])
        layers = self.layer[ids.reshape(-1)]
        if bool((layers < 0).any()):
            raise AssertionError("program: a step reads a node that no earlier step produces")
        sources = tuple(sorted(set(layers.tolist())))
        offset = torch.zeros(len(self.sizes), dtype=torch.long)
        start = 0
        for source in sources:
            offset[source] = start
            start += self.sizes[source]

        def local(t):
            return None if t is None else offset[self.layer[t]] + self.row[t]
        return Step(kind, sources, local(children), local(right), weights, products)

    def finish(self) -> Program:
        plan = self.plan
        starts = torch.tensor([0, *self.sizes]).cumsum(0) + 1         # zero row first
        index = torch.zeros(plan.num_nodes, dtype=torch.long)
        real = self.layer >= 0
        index[real] = starts[self.layer[real]] + self.row[real]
        next_row = int(starts[-1])
        for layer, i in self.outers:
            products = self.layers[layer - 1][i].products.reshape(-1)
            index[products] = next_row + torch.arange(products.numel())
            next_row += products.numel()
        return Program(self.layers, int(self.layer[plan.root]), int(self.row[plan.root]),
                       index, self.outers, self._pieces(plan.num_params + 2),
                       self.row_leaf, self.leaf_rows, self.leaf_table)

    def _pieces(self, width: int) -> tuple:
        """Give every dense/outer step whose weight slots are one contiguous range its own
        piece of ``logp_ext`` (split once per pass, so the backward is one concatenation
        instead of a full-size scatter per step); return the split sizes."""
        ranges = []
        for step in (s for layer in self.layers for s in layer):
            if step.kind in ("dense", "outer"):
                flat = step.weights.reshape(-1)
                first = int(flat[0])
                if torch.equal(flat, torch.arange(first, first + flat.numel())):
                    ranges.append((first, first + flat.numel(), step))
        if not ranges:
            return ()
        sizes, at = [], 0
        for first, stop, step in sorted(ranges, key=lambda r: r[0]):
            if first > at:
                sizes.append(first - at)
            step.piece = len(sizes)
            sizes.append(stop - first)
            at = stop
        if at < width:
            sizes.append(width - at)
        return tuple(sizes)


def _leaf_layout(plan) -> tuple:
    """Rows of the leaf layer. When every variable has about as many leaves (padding at most
    doubles the layer), the rows go variable by variable, ``Lv`` per variable (padding rows
    read log 1), so that leaf values are one gather from a ``[V, Lv, K + 1]`` table;
    otherwise row ``l`` is leaf ``l``."""
    num_leaves, num_vars = plan.num_leaves, plan.num_vars
    identity = torch.arange(num_leaves)
    counts = torch.bincount(plan.leaf_var, minlength=num_vars)
    per_var = int(counts.max()) if num_leaves else 0
    if num_leaves == 0 or num_vars * per_var > 2 * num_leaves:
        return identity, identity, None
    order = torch.argsort(plan.leaf_var, stable=True)                 # leaves by variable
    first = torch.cumsum(counts, 0) - counts
    rank = torch.arange(num_leaves) - first[plan.leaf_var[order]]     # position within its var
    leaf_rows = torch.empty(num_leaves, dtype=torch.long)
    leaf_rows[order] = plan.leaf_var[order] * per_var + rank
    row_leaf = torch.zeros(num_vars * per_var, dtype=torch.long)
    row_leaf[leaf_rows] = identity
    log_one = plan.num_params + 1
    table = torch.full((num_vars * per_var, plan.max_states + 1), log_one, dtype=torch.long)
    table[leaf_rows, :plan.max_states] = plan.leaf_slots
    return row_leaf, leaf_rows, table.view(num_vars, per_var, plan.max_states + 1)


def _products_and_parents(plan) -> tuple[tuple, np.ndarray]:
    """Per node id: its first two children and child count if it is a product (-1 / 0
    otherwise), as arrays ``[N, 2]`` and ``[N]``; and every node's number of parent edges."""
    n = plan.num_nodes
    pair = np.full((n, 2), -1, dtype=np.int64)
    width = np.zeros(n, dtype=np.int64)
    parents = np.zeros(n, dtype=np.int64)
    for group in plan.groups():
        children = group.children.numpy()
        if group.kind == "dense":                     # every sum of a block reads its row
            per_block = (group.stop - group.start) // children.shape[0]
            parents += np.bincount(children.reshape(-1), minlength=n) * per_block
            continue
        mask = group.edge_mask.numpy()
        parents += np.bincount(children[mask], minlength=n)
        if group.kind == "product":
            width[group.start:group.stop] = mask.sum(1)
            pair[group.start:group.stop, :min(2, children.shape[1])] = children[:, :2]
    return (pair, width), parents


def _fusable_blocks(plan, products: tuple, parents: np.ndarray) -> dict:
    """Dense blocks whose children are exactly the products of two node lists, used by no
    other node: ``(group start, block) -> (left [A], right [A2], products [A, A2],
    columns [K])`` where ``columns[k]`` is child ``k``'s position ``a * A2 + b``."""
    pair, width = products
    fused = {}
    for group in plan.groups():
        if group.kind != "dense":
            continue
        kids = group.children.numpy()
        blocks, k = kids.shape
        per_block = (group.stop - group.start) // blocks
        ok = ((width[kids] == 2) & (parents[kids] == per_block)).all(1)
        for g in np.flatnonzero(ok).tolist():
            lefts, li = np.unique(pair[kids[g], 0], return_inverse=True)
            rights, ri = np.unique(pair[kids[g], 1], return_inverse=True)
            if len(lefts) * len(rights) != k:
                continue
            columns = li.reshape(-1) * len(rights) + ri.reshape(-1)
            if int(np.bincount(columns, minlength=k).max()) != 1:
                continue                              # a repeated (left, right) pair
            grid = np.empty(k, dtype=np.int64)
            grid[columns] = kids[g]
            fused[(group.start, g)] = tuple(torch.from_numpy(a) for a in
                                            (lefts, rights, grid.reshape(len(lefts), -1), columns))
    return fused
