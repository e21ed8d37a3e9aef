"""The upward pass's per-layer :class:`Program`, built once from a compiled plan.

The program decides how each layer runs (the step kinds of :mod:`circuits.upward`) and
where each node's value lives: ``(layer, row)``, or nowhere for the products an ``outer``
step fuses into its sums. Two fusions are rewrites made here: the ``outer`` step
(:func:`_fusable_blocks`) and the first layer read from the leaf tables
(:func:`leaf_products`): where the first layer is one ``product`` step over leaves only
and no later step reads the leaf layer, the products, grouped by the tuple of variables
of their children (``U`` tuples of ``W`` variables, ``I`` products each), are read from
the leaf tables at the tuple's states (column 0 of each table is log 1, read by a missing
value) and summed over ``W``: the same additions as the unfused pass, no leaf layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass, replace

import numpy as np
import torch

__all__ = ["KeptWeights", "LeafProducts", "Program", "Step", "build_program", "kept",
           "kept_structure", "leaf_products", "moved"]


def kept_structure() -> torch.inference_mode:
    """The context that builds structure kept across calls: outside inference mode, so no
    kept index tensor is an inference tensor."""
    return torch.inference_mode(False)


def kept(cache: dict, key, make):
    """``cache[key]``, made by ``make()`` under :func:`kept_structure` on first use."""
    if key not in cache:
        with kept_structure():
            cache[key] = make()
    return cache[key]


def moved(obj, device):
    """A copy of ``obj`` with every tensor in it (dataclass init fields, lists, tuples) on
    ``device``; other values shared."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, (list, tuple)):
        return type(obj)(moved(v, device) for v in obj)
    if is_dataclass(obj) and not isinstance(obj, type):
        return type(obj)(**{f.name: moved(getattr(obj, f.name), device)
                            for f in fields(obj) if f.init})
    return obj


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
    leaf_table: torch.Tensor | None = None  # [V, Lv, K + 1] slots: the leaf layer by variable


@dataclass(frozen=True)
class KeptWeights:
    """What :func:`circuits.upward.weight_exps` keeps for passes with unchanged parameters:
    ``exps``, ``exp(piece)`` of every piece a dense or outer step reads (else None);
    ``safe``, the pieces whose every weight is at least twice the step's limit (a shifted
    child is exactly 1, so such a step cannot underflow); ``derived``, other tensors of the
    parameters alone made on first use (gathered log-weights, leaf tables)."""

    exps: tuple
    safe: frozenset
    derived: dict = field(default_factory=dict, compare=False, repr=False)

    def get(self, owner, make):
        """``make()`` for ``owner``, made on first use (held with ``owner``)."""
        entry = self.derived.get(id(owner))
        if entry is None or entry[0] is not owner:
            entry = self.derived[id(owner)] = (owner, make())
        return entry[1]


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
        self.row_leaf, leaf_rows, self.leaf_table = _leaf_layout(plan)
        self.layer[1:plan.num_leaves + 1] = 0
        self.row[1:plan.num_leaves + 1] = leaf_rows
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
                       self.row_leaf, self.leaf_table)

    def _pieces(self, width: int) -> tuple:
        """Give every dense/outer step whose weight slots are one contiguous range its own
        piece of ``logp_ext`` (split once per pass); return the split sizes."""
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
    """Rows of the leaf layer: variable by variable, ``Lv`` per variable (padding reads
    log 1; a ``[V, Lv, K + 1]`` slot table) where padding at most doubles the layer, else
    row ``l`` is leaf ``l``."""
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


# --- the first layer read from the leaf tables ------------------------------------------
@dataclass
class LeafProducts:
    """Index tensors of the fused first layer (built once per program)."""

    slots: torch.Tensor        # [U, W, K + 1, I] slot of each child's value: log 1, states 0..K-1
    variables: torch.Tensor    # [U * W] variable of each tuple position
    row_base: torch.Tensor     # [U * W, 1] table row of each tuple position's log 1
    gather_slots: torch.Tensor  # [U, I, W, K + 1]: ``slots`` in the autograd layout
    order: torch.Tensor | None  # [M] row of each product in the grouped result (None: identity)
    program: Program           # the program to run after it: layer 1's readers index grouped rows

    def values(self, logp_ext: torch.Tensor, x: torch.Tensor,
               kept: KeptWeights | None = None) -> torch.Tensor:
        """The first layer's log-values ``[M, B]`` from ``logp_ext [1, P + 2]`` and ``x [B, V]``
        (-1 = missing); ``kept``: :class:`KeptWeights` that keep the leaf tables."""
        u, w, _, i = self.slots.shape
        batch = x.shape[0]
        if torch.is_grad_enabled() and logp_ext.requires_grad:
            table = logp_ext.reshape(-1).take(self.gather_slots)            # [U, I, W, K + 1]
            if table.device.type == "cpu" and bool(torch.isfinite(table).all()):
                grouped = self._one_hot_sum(table, x).view(u * i, batch)
            else:
                picked = self._columns(x).view(u, 1, w, batch)
                grouped = table.gather(3, picked.expand(u, i, w, batch)).sum(2).view(u * i, batch)
        else:
            table = self.table(logp_ext) if kept is None else kept.get(self, lambda: self.table(logp_ext))
            rows = x.T.index_select(0, self.variables).add_(self.row_base).view(-1)
            grouped = table.index_select(0, rows).view(u, w, batch, i).sum(1)
            grouped = grouped.transpose(1, 2).reshape(u * i, batch)
        return grouped if self.order is None else grouped.index_select(0, self.order)

    def _one_hot_sum(self, table: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``sum_w table[u, i, w, 1 + x_w]`` ``[U, I, B]`` as a batched matmul with one-hot
        columns (finite tables only: ``0 * log 0`` is NaN)."""
        u, i, w, k1 = table.shape
        batch = x.shape[0]
        picked = self._columns(x).view(u, w, 1, batch)
        one_hot = table.new_zeros(u, w, k1, batch).scatter_(2, picked, 1.0)
        return torch.bmm(table.view(u, i, w * k1), one_hot.view(u, w * k1, batch))

    def _columns(self, x: torch.Tensor) -> torch.Tensor:
        """The column ``1 + state`` ``[U * W, B]`` each tuple position reads (0: missing)."""
        return x.T.index_select(0, self.variables).add_(1)

    def table(self, logp_ext: torch.Tensor) -> torch.Tensor:
        """The leaf tables as rows ``[U * W * (K + 1), I]`` (row ``(u, w, 0)``: log 1)."""
        return logp_ext.reshape(-1).take(self.slots).view(-1, self.slots.shape[3])


def leaf_products(program: Program) -> LeafProducts | None:
    """The fused first layer of ``program``, or None (kept on the program)."""
    return kept(program.__dict__, "_leaf_products", lambda: _build(program))


def _build(program: Program) -> LeafProducts | None:
    if program.leaf_table is None or not program.layers or len(program.layers[0]) != 1:
        return None
    step = program.layers[0][0]
    if step.kind != "product" or step.sources != (0,):
        return None
    if any(0 in s.sources for layer in program.layers[1:] for s in layer):
        return None
    if program.root_layer == 0:
        return None
    per_var = program.leaf_table.shape[1]
    children = step.children                                          # [M, W] leaf-layer rows
    variables = torch.div(children, per_var, rounding_mode="floor")
    tuples, group, counts = torch.unique(variables, dim=0, return_inverse=True,
                                         return_counts=True)
    if counts.numel() == 0 or bool((counts != counts[0]).any()):
        return None
    order = torch.argsort(group, stable=True)                         # products grouped by tuple
    u, i, w = tuples.shape[0], int(counts[0]), children.shape[1]
    rows = children[order].view(u, i, w)
    table = program.leaf_table.view(-1, program.leaf_table.shape[2])  # [rows, K + 1], log 1 last
    gather_slots = table.roll(1, 1)[rows]                              # [U, I, W, K + 1]
    slots = gather_slots.permute(0, 2, 3, 1).contiguous()              # [U, W, K + 1, I]
    row_base = (torch.arange(u * w, device=rows.device) * slots.shape[2] + 1).view(-1, 1)
    variables = tuples.reshape(-1)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)
    if bool((order == torch.arange(order.numel(), device=order.device)).all()):
        return LeafProducts(slots, variables, row_base, gather_slots, None, program)
    renumbered = _renumbered(program, inverse)
    if renumbered is None:
        return LeafProducts(slots, variables, row_base, gather_slots, inverse, program)
    return LeafProducts(slots, variables, row_base, gather_slots, None, renumbered)


def _renumbered(program: Program, inverse: torch.Tensor) -> Program | None:
    """``program`` reading layer 1 in grouped order (row ``r`` at ``inverse[r]``); None where
    a step reads layer 1 with other layers."""
    layers = [program.layers[0]]
    for steps in program.layers[1:]:
        copies = []
        for step in steps:
            if 1 not in step.sources:
                copies.append(step)
            elif step.sources != (1,):
                return None
            else:
                copies.append(replace(step, children=inverse[step.children],
                                      right=None if step.right is None else inverse[step.right]))
        layers.append(copies)
    root_pos = int(inverse[program.root_pos]) if program.root_layer == 1 else program.root_pos
    return replace(program, layers=layers, root_pos=root_pos)
