"""Compile a validated node DAG into a layered plan of index tensors (once per circuit).

Node ids: ``0`` is a constant node of log-value 0 (the padding child), ``1..num_leaves``
the leaves, then inner nodes layer by layer (layer = height), group by group, each group a
contiguous id range:

- ``product``: children ``[M, A]`` (padded with node 0);
- ``sum``: children ``[M, A]`` and weight slots ``[M, A]`` (padding weight log 0);
- ``dense``: ``G`` blocks of ``M`` sums sharing one ordered child list: children
  ``[G, C]``, weight slots ``[G * M, C]``.

Parameters are one flat vector of logits: the support-state logits of every leaf with
several support states and the child logits of every sum with several children. Weight
slots index the normalised vector extended by two constants: ``num_params`` (log 0) and
``num_params + 1`` (log 1). :class:`ParamTable` lays the vector out.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from circuits.analysis import LEAF, PRODUCT, Structure
from circuits.schedule import Schedule, build_schedule, moved

__all__ = ["Group", "Plan", "compile_plan"]


@dataclass
class Group:
    """A batch of same-kind nodes in one layer, written to columns ``[start, stop)``."""

    kind: str                      # "product" | "sum" | "dense"
    start: int
    stop: int
    children: torch.Tensor         # [M, A] (dense: [G, C]) long node ids
    weights: torch.Tensor | None   # [M, A] long slots into extended logp (None for products)
    edge_mask: torch.Tensor        # [M, A] bool, False on padding

    @property
    def nodes(self) -> torch.Tensor:
        return torch.arange(self.start, self.stop)

    def child_matrix(self) -> torch.Tensor:
        """Children as ``[M, A]`` for every kind (dense blocks expanded)."""
        if self.kind == "dense":
            blocks, width = self.children.shape
            per_block = (self.stop - self.start) // blocks
            return self.children.unsqueeze(1).expand(blocks, per_block, width).reshape(-1, width)
        return self.children


@dataclass
class Plan:
    """Index tensors for executing a circuit; see the module docstring for the layout."""

    num_nodes: int
    num_vars: int
    num_states: tuple[int, ...]
    max_states: int
    num_params: int
    root: int
    leaf_var: torch.Tensor            # [L] variable of each leaf (leaf i is node i + 1)
    leaf_slots: torch.Tensor          # [L, K] slot of each state's log-prob in extended logp
    leaf_offsets: torch.Tensor        # [L] = arange(L) * (K + 1): rows of leaf slots plus a log-1 column
    layers: list[list[Group]]         # layer 1.. (leaves are layer 0), groups in order
    param_group: torch.Tensor         # [P] normalisation group of each parameter
    num_param_groups: int
    init_logits: torch.Tensor         # [P] float64 logits from the nodes
    param_node: torch.Tensor          # [P] for sum-edge params the sum's node id, else -1
    param_child: torch.Tensor         # [P] for sum-edge params the child's node id, else -1
    param_leaf: torch.Tensor          # [P] for leaf params the leaf index, else -1
    param_state: torch.Tensor         # [P] for leaf params the state, else -1
    nodes: tuple = field(repr=False, default=())   # node objects by id (1..): leaves, then layers
    layer_of: torch.Tensor = None     # [N] layer of each node id (0 for the constant and leaves)
    schedule: Schedule = None         # the upward pass's steps, a rewrite of the groups (circuits.schedule)
    param_runs: tuple = ()            # (start, stop, size, first group, stop group) segments of the
                                      # parameters: size > 0 = runs of equal-size groups, 0 = mixed

    @cached_property
    def node_of(self) -> dict:
        """node object -> node id."""
        return dict(zip(self.nodes, range(1, len(self.nodes) + 1)))

    @property
    def num_leaves(self) -> int:
        return self.leaf_var.numel()

    def groups(self):
        for layer in self.layers:
            yield from layer

    def to(self, device) -> Plan:
        """The same plan with every index tensor on ``device``."""
        return moved(self, device)


def compile_plan(structure: Structure) -> Plan:
    """Number the nodes, lay out parameters and build every layer's index tensors (numpy
    over the structure's distinct child lists)."""
    order, kinds, num_states = structure.order, structure.kinds, structure.num_states
    max_states = max(num_states)
    leaf_pos = np.flatnonzero(kinds == LEAF)
    leaves = [order[p] for p in leaf_pos.tolist()]
    params = ParamTable()
    leaf_slots = params.leaf_slots(leaves, max_states)

    specs = _layer_specs(structure)
    ids = np.zeros(len(order), dtype=np.int64)
    ids[leaf_pos] = np.arange(1, len(leaves) + 1)
    next_id = len(leaves) + 1
    for layer in specs:
        for _, positions in layer:
            ids[positions] = np.arange(next_id, next_id + len(positions))
            next_id += len(positions)
    lists = _ChildLists(structure, ids)
    layers = [[_build_group(kind, positions, lists, ids, params) for kind, positions in layer]
              for layer in specs]
    leaf_slots = params.resolve(leaf_slots)
    for layer in layers:
        for group in layer:
            if group.kind == "sum":                 # dense slots hold no placeholders
                group.weights = params.resolve(group.weights)

    layer_of = torch.zeros(next_id, dtype=torch.long)
    for index, layer in enumerate(layers, start=1):
        for group in layer:
            layer_of[group.start:group.stop] = index
    nodes = tuple(map(order.__getitem__, np.argsort(ids, kind="stable").tolist()))
    plan = Plan(
        num_nodes=next_id, num_vars=len(num_states), num_states=num_states,
        max_states=max_states, num_params=params.count, root=int(ids[-1]),
        leaf_var=torch.tensor([leaf.var for leaf in leaves], dtype=torch.long),
        leaf_slots=leaf_slots, leaf_offsets=torch.arange(len(leaves)) * (max_states + 1), layers=layers,
        param_group=params.tensor("group"),
        num_param_groups=params.num_groups,
        init_logits=params.tensor("init"),
        param_node=params.tensor("node"),
        param_child=params.tensor("child"),
        param_leaf=params.tensor("leaf"),
        param_state=params.tensor("state"),
        nodes=nodes, layer_of=layer_of)
    plan.schedule = build_schedule(plan)
    plan.param_runs = _param_runs(plan.param_group, plan.num_param_groups)
    return plan


def _param_runs(group: torch.Tensor, num_groups: int, min_groups: int = 4) -> tuple:
    """The parameters (groups contiguous, in order) as ``(start, stop, size, first group,
    stop group)`` segments: each run of groups of one size, except that runs of fewer than
    ``min_groups`` groups next to each other make one stretch of size 0 (mixed sizes)."""
    if num_groups == 0:
        return ()
    sizes, lengths = torch.unique_consecutive(torch.bincount(group, minlength=num_groups),
                                              return_counts=True)
    segments, at, first, short = [], 0, 0, False
    for size, length in zip(sizes.tolist(), lengths.tolist()):
        stop, stop_group = at + size * length, first + length
        if short and length < min_groups:            # joins the short runs before it
            segments[-1] = (segments[-1][0], stop, 0, segments[-1][3], stop_group)
        else:
            segments.append((at, stop, size, first, stop_group))
        short, at, first = length < min_groups, stop, stop_group
    return tuple(segments)


def _layer_specs(structure: Structure) -> list[list[tuple[str, list]]]:
    """Per height 1, 2, ...: its groups ``(kind, positions in order)``: products, other sums,
    then dense blocks (sums sharing one child list) merged by shape ``(sums per block,
    children)``. Sparse sums come list by list (first use), as do the blocks."""
    kinds, child_list, sizes = structure.kinds, structure.child_list, structure.list_size
    inner = np.flatnonzero(structure.heights > 0)
    inner = inner[np.argsort(structure.heights[inner], kind="stable")]
    bounds = np.flatnonzero(np.diff(structure.heights[inner])) + 1
    specs = []
    for nodes in np.split(inner, bounds) if len(inner) else []:
        products = nodes[kinds[nodes] == PRODUCT].tolist()
        sums = nodes[kinds[nodes] != PRODUCT]
        shared: dict = {}
        for p, index in zip(sums.tolist(), child_list[sums].tolist()):
            shared.setdefault(index, []).append(p)
        sparse, by_shape = [], {}
        for index, members in shared.items():
            width = int(sizes[index])
            if len(members) > 1 and width > 1:
                by_shape.setdefault((len(members), width), []).extend(members)
            else:
                sparse.extend(members)
        layer = [("product", products)] if products else []
        if sparse:
            layer.append(("sum", sparse))
        layer.extend(("dense", members) for members in by_shape.values())
        specs.append(layer)
    return specs


class _ChildLists:
    """The structure's distinct child lists as node ids, flat: list ``j`` is
    ``ids[pointer[j]:pointer[j] + length[j]]``."""

    def __init__(self, structure: Structure, node_ids: np.ndarray):
        self.length, self.pointer = structure.list_size, structure.list_start
        self.ids = node_ids[structure.list_members]
        self.child_list = structure.child_list
        self.order = structure.order

    def padded(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Children ``[M, A]`` of the nodes at ``positions`` (padding: node 0) and the mask."""
        index = self.child_list[positions]
        length = self.length[index]
        width = int(length.max())
        mask = np.arange(width) < length[:, None]
        at = np.where(mask, self.pointer[index][:, None] + np.arange(width), 0)
        return np.where(mask, self.ids[at], 0), mask


def _build_group(kind: str, positions: list, lists: _ChildLists, node_ids: np.ndarray,
                 params: ParamTable) -> Group:
    positions = np.asarray(positions, dtype=np.int64)
    ids = node_ids[positions]
    start, stop = int(ids[0]), int(ids[0]) + len(positions)
    if kind == "dense":
        index = lists.child_list[positions]
        heads = positions[np.flatnonzero(np.r_[True, index[1:] != index[:-1]])]
        head_ids, _ = lists.padded(heads)
        width = head_ids.shape[1]
        first = params.dense_slots(positions, lists.order, ids, head_ids)
        weights = torch.arange(first, first + len(positions) * width).view(len(positions), width)
        return Group(kind, start, stop, torch.from_numpy(head_ids), weights,
                     torch.ones_like(weights, dtype=torch.bool))
    children, mask = lists.padded(positions)
    weights = params.sum_slots(positions, lists.order, ids, children, mask) \
        if kind == "sum" else None
    return Group(kind, start, stop, torch.from_numpy(children), weights, torch.from_numpy(mask))


# --- the flat parameter vector's layout -----------------------------------------------
class ParamTable:
    """Assigns flat parameter positions; placeholder slots are mapped by ``resolve``."""

    NEG_INF, ZERO = -2, -3

    FIELDS = ("group", "init", "node", "child", "leaf", "state")

    def __init__(self):
        self.count = 0
        self.num_groups = 0
        self._chunks: dict = {name: [] for name in self.FIELDS}

    def tensor(self, name: str) -> torch.Tensor:
        """Every parameter's ``name`` field (see FIELDS), in slot order."""
        dtype = np.float64 if name == "init" else np.int64
        chunks = self._chunks[name]
        return torch.from_numpy(np.concatenate(chunks) if chunks else np.zeros(0, dtype=dtype))

    def _append(self, count: int, groups: int, **fields) -> int:
        first = self.count
        for name in self.FIELDS:
            value = fields.get(name, -1)
            if np.isscalar(value):
                value = np.full(count, value, dtype=np.int64)
            self._chunks[name].append(value)
        self.count += count
        self.num_groups += groups
        return first

    def leaf_slots(self, leaves: list, max_states: int) -> torch.Tensor:
        """``[L, K]`` slots of the leaves' states (placeholders outside the support and for
        single-state supports); one group per leaf with several support states."""
        rows, group, init, leaf, state = [], [], [], [], []
        count, groups = self.count, self.num_groups
        for i, node in enumerate(leaves):
            support = node.support
            row = [self.NEG_INF] * max_states
            if len(support) == 1:
                row[support[0]] = self.ZERO
            else:
                for s in support:
                    row[s] = count
                    count += 1
                group.extend([groups] * len(support))
                groups += 1
                leaf.extend([i] * len(support))
                state.extend(support)
                logits = node.logits
                init.extend([logits[s] for s in support])
            rows.append(row)
        if leaf:
            self._append(len(leaf), groups - self.num_groups, group=np.asarray(group, dtype=np.int64),
                         init=np.asarray(init, dtype=np.float64), leaf=np.asarray(leaf, dtype=np.int64),
                         state=np.asarray(state, dtype=np.int64))
        return torch.tensor(rows, dtype=torch.long).view(len(leaves), max_states)

    def sum_slots(self, positions, order, ids, children, mask) -> torch.Tensor:
        """``[M, A]`` weight slots of a sparse sum group (``children``/``mask`` ``[M, A]``):
        each sum with several children gets one group of consecutive parameters, a
        single-child sum the log-1 placeholder."""
        length = mask.sum(1)
        multi = length > 1
        size = np.where(multi, length, 0)
        first = self.count + np.cumsum(size) - size
        slots = np.where(mask, first[:, None] + np.arange(mask.shape[1]), self.NEG_INF)
        slots[~multi, 0] = self.ZERO
        if multi.any():
            rows = np.flatnonzero(multi)
            total = int(size.sum())
            init = np.fromiter(itertools.chain.from_iterable(order[p].log_weights for p in positions[rows].tolist()),
                               dtype=np.float64, count=total)
            keep = mask & multi[:, None]
            self._append(total, len(rows),
                         group=np.repeat(self.num_groups + np.arange(len(rows)), size[rows]),
                         init=init, node=np.repeat(ids[rows], size[rows]),
                         child=children[keep])
        return torch.from_numpy(slots)

    def dense_slots(self, positions, order, ids, head_ids) -> int:
        """Add the parameters of a dense group's sums (blocks of equal size sharing the child
        ids ``head_ids[block]``) in one go; return the first slot."""
        n, k = len(positions), head_ids.shape[1]
        init = np.fromiter(itertools.chain.from_iterable(order[p].log_weights for p in positions.tolist()),
                           dtype=np.float64, count=n * k)
        return self._append(n * k, n, group=np.repeat(self.num_groups + np.arange(n), k),
                            init=init, node=np.repeat(ids, k),
                            child=np.repeat(head_ids, n // len(head_ids), 0).reshape(-1))

    def resolve(self, slots: torch.Tensor) -> torch.Tensor:
        """Map the placeholder slots to ``count`` (log 0) and ``count + 1`` (log 1)."""
        slots = slots.clone()
        slots[slots == self.NEG_INF] = self.count
        slots[slots == self.ZERO] = self.count + 1
        return slots
