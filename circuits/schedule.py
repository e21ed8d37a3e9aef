"""A plan's upward schedule: its groups lowered to per-layer steps, then rewritten.

:func:`build_schedule` (run once by :func:`circuits.compile.compile_plan`) lowers each
group to steps on node ids (``product`` by width, ``sum``, ``dense`` blocks), applies the
rewrite rules of :data:`REWRITES` in order, and gives every node its place ``(layer, row)``
(none for the products an ``outer`` step fuses into its sums); the steps' children then
index their source layers' rows. The rules:

- ``outer``: a dense block whose children are the complete products of two node lists, used
  by no other node, becomes an ``outer`` step (:func:`circuits.kernels.outer_values`); the
  products are never materialised;
- ``runs``: the dense blocks of a layer with one shape, one step (the outer blocks too);
- ``pieces``: a dense or outer step whose weight slots are one contiguous range reads its
  own piece of ``logp_ext`` (split once per pass) instead of gathering;
- ``first layer``: where the first layer is one ``product`` step over leaves only and no
  later step reads the leaf layer, its products, grouped by the tuple of variables of their
  children (``U`` tuples of ``W`` variables, ``I`` products each), can be read straight
  from the leaf tables at the tuple's states (column 0 of each table is log 1, read by a
  missing value) and summed over ``W`` (:class:`LeafProducts`, ``schedule.first``): the
  same additions as the leaf layer's pass, an alternative entry into the same schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass, replace

import numpy as np
import torch

__all__ = ["KeptWeights", "LeafProducts", "REWRITES", "Schedule", "Step", "build_schedule",
           "kept", "kept_structure", "moved"]


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
    """One batched operation of a layer, writing ``nodes``; ``children`` (and ``right``) are
    node ids until the schedule is built, then rows of the step's source tensor."""

    kind: str                          # "product" | "sum" | "dense" | "outer"
    nodes: torch.Tensor                # [n] node ids written (dense/outer: block by block)
    children: torch.Tensor             # product [M, W]; sum [M, A]; dense [G, K]; outer [G, A]
    right: torch.Tensor | None = None  # outer: [G, A2]
    weights: torch.Tensor | None = None  # slots into logp_ext: sum [M, A]; dense/outer [G, M, K]
    products: torch.Tensor | None = None  # outer: node ids [G, A, A2] of the fused products
    piece: int | None = None           # dense/outer with contiguous slots: its piece of logp_ext
    sources: tuple = ()                # layer indices read (concatenated when several)


@dataclass
class Schedule:
    """Steps per layer (layer 1 onwards), where each node's value lives, and the leaf layer."""

    layers: list                       # list[list[Step]]
    row_leaf: torch.Tensor             # [n_0] leaf index of each leaf-layer row (padding: 0)
    leaf_rows: torch.Tensor            # [L] leaf-layer row of each leaf
    leaf_table: torch.Tensor | None    # [V, Lv, K + 1] slots: the leaf layer by variable
    cuts: tuple = ()                   # split sizes of logp_ext's P + 2 columns into pieces
    first: LeafProducts | None = None  # the first layer read from the leaf tables
    root_layer: int = 0
    root_pos: int = 0
    node_index: torch.Tensor | None = None  # [N] row in cat(zero row, layers..., fused products)
    outers: list = field(default_factory=list)  # (layer, step index) of every outer step


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


def build_schedule(plan) -> Schedule:
    """``plan``'s groups lowered to steps, rewritten by :data:`REWRITES` in order, placed."""
    schedule = Schedule([_lowered(groups) for groups in plan.layers], *_leaf_layout(plan))
    for _, rule in REWRITES:
        rule(plan, schedule)
    return _placed(plan, schedule)


def _lowered(groups) -> list[Step]:
    """A layer's groups as steps on node ids: products by width, a sum group (padding read
    as its first child, of weight log 0), a dense group's blocks."""
    steps = []
    for group in groups:
        if group.kind == "product":
            widths = group.edge_mask.sum(1)
            for width in torch.unique(widths).tolist():
                rows = widths == width
                steps.append(Step("product", group.nodes[rows], group.children[rows, :width]))
        elif group.kind == "sum":
            children = torch.where(group.edge_mask, group.children, group.children[:, :1])
            steps.append(Step("sum", group.nodes, children, weights=group.weights))
        else:
            blocks, width = group.children.shape
            steps.append(Step("dense", group.nodes, group.children,
                              weights=group.weights.view(blocks, -1, width)))
    return steps


# --- the rewrite rules ---------------------------------------------------------------------
def _outer(plan, schedule: Schedule) -> None:
    """Each dense block over the complete products of two lists -> an ``outer`` step (after
    the layer's other steps); the products' own steps lose those rows."""
    (pair, width), parents = _products_and_parents(plan)
    virtual = torch.zeros(plan.num_nodes, dtype=torch.bool)
    for steps in schedule.layers:
        for i, step in enumerate(list(steps)):
            if step.kind != "dense":
                continue
            grids = [_grid(kids.numpy(), step.weights.shape[1], pair, width, parents)
                     for kids in step.children]
            keep = torch.tensor([grid is None for grid in grids])
            nodes = step.nodes.view(len(grids), -1)
            steps[i] = Step("dense", nodes[keep].reshape(-1), step.children[keep],
                            weights=step.weights[keep])
            for g in torch.nonzero(~keep).flatten().tolist():
                left, right, products, columns = grids[g]
                w = torch.empty_like(step.weights[g])
                w[:, columns] = step.weights[g]
                steps.append(Step("outer", nodes[g], left[None], right[None], w[None],
                                  products[None]))
                virtual[products.reshape(-1)] = True
    for steps in schedule.layers:
        steps[:] = [replace(s, nodes=s.nodes[keep], children=s.children[keep])
                    if s.kind == "product" else s for s in steps for keep in [~virtual[s.nodes]]]
        steps[:] = [s for s in steps if s.nodes.numel()]


def _runs(plan, schedule: Schedule) -> None:
    """The dense blocks, and the outer blocks, of a layer with one shape: one step, where
    the first of them stood."""
    for steps in schedule.layers:
        runs: dict = {}
        for step in steps:
            if step.kind in ("dense", "outer"):
                right = None if step.right is None else step.right.shape[1]
                runs.setdefault((step.kind, *step.weights.shape[1:], right), []).append(step)
        heads = {id(run[0]): run for run in runs.values()}
        steps[:] = [_merged(heads[id(s)]) if id(s) in heads else s for s in steps
                    if s.kind not in ("dense", "outer") or id(s) in heads]


def _merged(run: list) -> Step:
    """The steps of one kind and shape ``run`` as one (blocks concatenated)."""
    names = ("nodes", "children", "right", "weights", "products")
    return run[0] if len(run) == 1 else replace(run[0], **{
        name: torch.cat([getattr(s, name) for s in run]) for name in names
        if getattr(run[0], name) is not None})


def _pieces(plan, schedule: Schedule) -> None:
    """Give every dense/outer step whose weight slots are one contiguous range its own
    piece of ``logp_ext`` (split once per pass); the split sizes are ``schedule.cuts``."""
    ranges = []
    for step in (s for layer in schedule.layers for s in layer):
        if step.kind in ("dense", "outer"):
            flat = step.weights.reshape(-1)
            first = int(flat[0])
            if torch.equal(flat, torch.arange(first, first + flat.numel())):
                ranges.append((first, first + flat.numel(), step))
    if not ranges:
        return
    sizes, at, width = [], 0, plan.num_params + 2
    for first, stop, step in sorted(ranges, key=lambda r: r[0]):
        if first > at:
            sizes.append(first - at)
        step.piece = len(sizes)
        sizes.append(stop - first)
        at = stop
    if at < width:
        sizes.append(width - at)
    schedule.cuts = tuple(sizes)


def _first_layer(plan, schedule: Schedule) -> None:
    """:class:`LeafProducts` of the first layer where the rule applies; the layer's products
    reordered to their grouped order."""
    layers, num_leaves = schedule.layers, plan.num_leaves
    if schedule.leaf_table is None or not layers or len(layers[0]) != 1:
        return
    step = layers[0][0]
    if step.kind != "product" or bool((step.children > num_leaves).any()):
        return
    if any(bool((ids <= num_leaves).any()) for later in layers[1:] for s in later
           for ids in (s.children, s.right) if ids is not None):
        return
    variables = plan.leaf_var[step.children - 1]                       # [M, W]
    tuples, group, counts = torch.unique(variables, dim=0, return_inverse=True,
                                         return_counts=True)
    if bool((counts != counts[0]).any()):
        return
    order = torch.argsort(group, stable=True)                         # products grouped by tuple
    layers[0][0] = step = replace(step, nodes=step.nodes[order], children=step.children[order])
    u, i, w = tuples.shape[0], int(counts[0]), step.children.shape[1]
    rows = schedule.leaf_rows[step.children - 1].view(u, i, w)         # leaf-layer rows
    table = schedule.leaf_table.view(-1, schedule.leaf_table.shape[2])  # [rows, K + 1], log 1 last
    gather_slots = table.roll(1, 1)[rows]                              # [U, I, W, K + 1]
    slots = gather_slots.permute(0, 2, 3, 1).contiguous()              # [U, W, K + 1, I]
    row_base = (torch.arange(u * w) * slots.shape[2] + 1).view(-1, 1)
    schedule.first = LeafProducts(slots, tuples.reshape(-1), row_base, gather_slots)


#: The rewrite rules of a lowered schedule, applied in this order by :func:`build_schedule`
#: (each ``rule(plan, schedule)`` rewrites the steps on node ids in place).
REWRITES = (("outer", _outer), ("runs", _runs), ("pieces", _pieces), ("first layer", _first_layer))


# --- placing the nodes ----------------------------------------------------------------------
def _placed(plan, schedule: Schedule) -> Schedule:
    """Every node's ``(layer, row)``, the steps' children as rows of their sources, the
    root's place and the node-id read-back index."""
    layer = torch.full((plan.num_nodes,), -1, dtype=torch.long)
    row = torch.full((plan.num_nodes,), -1, dtype=torch.long)
    layer[1:plan.num_leaves + 1], row[1:plan.num_leaves + 1] = 0, schedule.leaf_rows
    sizes = [schedule.row_leaf.numel()]
    for index, steps in enumerate(schedule.layers, start=1):
        nodes = torch.cat([s.nodes for s in steps]) if steps else torch.zeros(0, dtype=torch.long)
        layer[nodes], row[nodes] = index, torch.arange(nodes.numel())
        sizes.append(nodes.numel())
    for steps in schedule.layers:
        steps[:] = [_local(step, layer, row, sizes) for step in steps]
    starts = torch.tensor([0, *sizes]).cumsum(0) + 1                   # zero row first
    index = torch.zeros(plan.num_nodes, dtype=torch.long)
    real = layer >= 0
    index[real] = starts[layer[real]] + row[real]
    next_row = int(starts[-1])
    schedule.outers = [(li, i) for li, steps in enumerate(schedule.layers, start=1)
                       for i, s in enumerate(steps) if s.kind == "outer"]
    for li, i in schedule.outers:
        products = schedule.layers[li - 1][i].products.reshape(-1)
        index[products] = next_row + torch.arange(products.numel())
        next_row += products.numel()
    schedule.root_layer, schedule.root_pos = int(layer[plan.root]), int(row[plan.root])
    schedule.node_index = index
    return schedule


def _local(step: Step, layer: torch.Tensor, row: torch.Tensor, sizes: list) -> Step:
    """``step`` reading rows of the concatenation of its source layers."""
    ids = step.children if step.right is None else torch.cat([step.children.reshape(-1),
                                                              step.right.reshape(-1)])
    layers = layer[ids.reshape(-1)]
    if bool((layers < 0).any()):
        raise AssertionError("schedule: a step reads a node that no earlier step produces")
    sources = tuple(sorted(set(layers.tolist())))
    offset = torch.zeros(len(sizes), dtype=torch.long)
    start = 0
    for source in sources:
        offset[source] = start
        start += sizes[source]

    def local(t):
        return None if t is None else offset[layer[t]] + row[t]
    return replace(step, children=local(step.children), right=local(step.right), sources=sources)


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


def _grid(kids: np.ndarray, per_block: int, pair: np.ndarray, width: np.ndarray,
          parents: np.ndarray) -> tuple | None:
    """A dense block's children ``kids [K]`` as ``(left [A], right [A2], products [A, A2],
    columns [K])`` where they are exactly the products of two node lists, used by no other
    node (``columns[k]``: child ``k``'s position ``a * A2 + b``); else None."""
    if not bool(((width[kids] == 2) & (parents[kids] == per_block)).all()):
        return None
    lefts, li = np.unique(pair[kids, 0], return_inverse=True)
    rights, ri = np.unique(pair[kids, 1], return_inverse=True)
    k = len(kids)
    if len(lefts) * len(rights) != k:
        return None
    columns = li.reshape(-1) * len(rights) + ri.reshape(-1)
    if int(np.bincount(columns, minlength=k).max()) != 1:
        return None                                   # a repeated (left, right) pair
    grid = np.empty(k, dtype=np.int64)
    grid[columns] = kids
    return tuple(torch.from_numpy(a) for a in (lefts, rights, grid.reshape(len(lefts), -1), columns))


# --- the first layer read from the leaf tables ------------------------------------------
@dataclass
class LeafProducts:
    """Index tensors of the first layer read from the leaf tables (the ``first layer``
    rule): the layer's rows in its grouped order."""

    slots: torch.Tensor        # [U, W, K + 1, I] slot of each child's value: log 1, states 0..K-1
    variables: torch.Tensor    # [U * W] variable of each tuple position
    row_base: torch.Tensor     # [U * W, 1] table row of each tuple position's log 1
    gather_slots: torch.Tensor  # [U, I, W, K + 1]: ``slots`` in the autograd layout

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
        return grouped

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
