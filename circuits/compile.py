"""Compile a validated node DAG into a layered plan of index tensors (done once per circuit).

Node numbering (columns of every ``[batch, num_nodes]`` buffer):
``0`` is a constant node of log-value 0 (used as padding child), ``1..num_leaves`` are the
leaves, then inner nodes layer by layer: a node's layer is its height (1 + the largest
child height), so every child of a layer lives in an earlier layer. Within a layer the
nodes come group by group, each group a contiguous range of node ids:

- ``product``: children ``[M, A]`` (padded with node 0, log-value 0);
- ``sum``: children ``[M, A]`` and weight slots ``[M, A]`` (padding weight log 0 = -inf);
- ``dense``: ``G`` blocks of ``M`` sums, the sums of a block sharing one ordered child
  list: children ``[G, C]`` and weight slots ``[G * M, C]``, evaluated as one batched matrix
  product with a max shift (the EinsumNetworks trick).

Parameters are one flat vector of logits: the support-state logits of every leaf with more
than one support state and the child logits of every sum with more than one child. Weight
slots index the normalised vector extended by two constants: ``num_params`` (log 0) and
``num_params + 1`` (log 1), so single-child sums and indicator leaves need no parameter.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

import torch

from circuits.analysis import Structure
from circuits.nodes import Categorical, Product, Sum
from circuits.program import build_program

__all__ = ["Edges", "Group", "Plan", "compile_plan"]


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
class Edges:
    """Every real (non-padding) edge, in group order and row-major within a group.

    ``into_layer[i]`` lists, for layer ``i`` below the root's (layer 0 = the leaves), its
    node range ``[start, stop)``, the ids of the edges entering it and each edge's child
    position within the range, for pull-style top-down passes.
    """

    parent: torch.Tensor
    child: torch.Tensor
    into_layer: list


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
    node_of: dict = field(repr=False, default_factory=dict)   # node object -> node id
    layer_of: torch.Tensor = None     # [N] layer of each node id (0 for the constant and leaves)
    edges: Edges = None
    program: object = None            # the upward pass's per-layer steps (circuits.program)
    param_runs: tuple = ()            # (start, stop, size, first group, stop group) segments of the
                                      # parameters: size > 0 = runs of equal-size groups, 0 = mixed

    @property
    def num_leaves(self) -> int:
        return self.leaf_var.numel()

    def groups(self):
        for layer in self.layers:
            yield from layer

    def to(self, device) -> Plan:
        """The same plan with every index tensor on ``device``."""
        moved = {}
        for name, value in vars(self).items():
            moved[name] = value.to(device) if isinstance(value, torch.Tensor) else value
        moved["layers"] = [[Group(g.kind, g.start, g.stop, g.children.to(device),
                                  None if g.weights is None else g.weights.to(device),
                                  g.edge_mask.to(device)) for g in layer]
                           for layer in self.layers]
        e = self.edges
        moved["edges"] = Edges(e.parent.to(device), e.child.to(device),
                               [(a, b, ids.to(device), loc.to(device)) for a, b, ids, loc in e.into_layer])
        moved["program"] = self.program.to(device)
        return Plan(**moved)


def compile_plan(structure: Structure) -> Plan:
    """Number the nodes, lay out parameters and build every layer's index tensors."""
    order = structure.order
    leaves = [n for n in order if isinstance(n, Categorical)]
    num_states = structure.num_states
    max_states = max(num_states)
    node_of = {leaf: i + 1 for i, leaf in enumerate(leaves)}

    params = _ParamTable()
    leaf_slots = torch.empty(len(leaves), max_states, dtype=torch.long)
    for i, leaf in enumerate(leaves):
        for state in range(max_states):
            leaf_slots[i, state] = params.leaf_slot(i, leaf, state)

    by_layer: dict[int, list] = {}
    for node in order:
        if node.children:
            by_layer.setdefault(structure.heights[node], []).append(node)
    next_id = len(leaves) + 1
    pending = []
    for height in sorted(by_layer):
        specs = _layer_specs(by_layer[height])
        for kind, nodes in specs:
            for node in nodes:
                node_of[node] = next_id
                next_id += 1
        pending.append(specs)

    layers = []
    for specs in pending:
        layer = []
        for kind, nodes in specs:
            layer.append(_build_group(kind, nodes, node_of, params))
        layers.append(layer)
    leaf_slots = params.resolve(leaf_slots)
    for layer in layers:
        for group in layer:
            if group.weights is not None:
                group.weights = params.resolve(group.weights)

    layer_of = torch.zeros(next_id, dtype=torch.long)
    for index, layer in enumerate(layers, start=1):
        for group in layer:
            layer_of[group.start:group.stop] = index
    edges = _edge_index(layers, len(leaves), layer_of)
    plan = Plan(
        num_nodes=next_id, num_vars=len(num_states), num_states=num_states,
        max_states=max_states, num_params=params.count, root=node_of[order[-1]],
        leaf_var=torch.tensor([leaf.var for leaf in leaves], dtype=torch.long),
        leaf_slots=leaf_slots, leaf_offsets=torch.arange(len(leaves)) * (max_states + 1), layers=layers,
        param_group=params.tensor("group"),
        num_param_groups=params.num_groups,
        init_logits=params.tensor("init"),
        param_node=params.tensor("node"),
        param_child=params.tensor("child"),
        param_leaf=params.tensor("leaf"),
        param_state=params.tensor("state"),
        node_of=node_of, layer_of=layer_of, edges=edges)
    plan.program = build_program(plan)
    plan.param_runs = _param_runs(plan.param_group, plan.num_param_groups)
    return plan


def _param_runs(group: torch.Tensor, num_groups: int, min_groups: int = 4) -> tuple:
    """Split the parameters (each group a contiguous range, groups in order) into segments:
    runs of at least ``min_groups`` groups of one size (normalised by a dense log-softmax)
    and mixed stretches between them (normalised by scatter)."""
    if num_groups == 0:
        return ()
    sizes = torch.bincount(group, minlength=num_groups)
    run_sizes, run_lengths = torch.unique_consecutive(sizes, return_counts=True)
    segments, at, first_group = [], 0, 0
    mixed_from = None                                 # (param start, group start) of a mixed stretch
    for size, length in zip(run_sizes.tolist(), run_lengths.tolist()):
        stop, stop_group = at + size * length, first_group + length
        if length >= min_groups:
            if mixed_from is not None:
                segments.append((mixed_from[0], at, 0, mixed_from[1], first_group))
                mixed_from = None
            segments.append((at, stop, size, first_group, stop_group))
        elif mixed_from is None:
            mixed_from = (at, first_group)
        at, first_group = stop, stop_group
    if mixed_from is not None:
        segments.append((mixed_from[0], at, 0, mixed_from[1], first_group))
    return tuple(segments)


def _edge_index(layers: list[list[Group]], num_leaves: int, layer_of: torch.Tensor) -> Edges:
    parents, children = [], []
    for layer in layers:
        for group in layer:
            mask = group.edge_mask.reshape(-1)
            rows = group.nodes.unsqueeze(1).expand_as(group.edge_mask).reshape(-1)
            parents.append(rows[mask])
            children.append(group.child_matrix().reshape(-1)[mask])
    parent = torch.cat(parents) if parents else torch.zeros(0, dtype=torch.long)
    child = torch.cat(children) if children else torch.zeros(0, dtype=torch.long)
    # Every layer below the root's (a lone leaf is its own root: no layer takes edges).
    ranges = ([(1, num_leaves + 1)] if layers else []) + [
        (layer[0].start, layer[-1].stop) for layer in layers[:-1]]
    into_layer = []
    for start, stop in ranges:
        ids = torch.nonzero((child >= start) & (child < stop)).flatten()
        into_layer.append((start, stop, ids, child[ids] - start))
    return Edges(parent, child, into_layer)


def _layer_specs(nodes: list) -> list[tuple[str, list]]:
    """Split one layer into groups: products, other sums, then dense blocks (sums sharing
    one child list) merged by shape ``(sums per block, children)``."""
    products = [n for n in nodes if isinstance(n, Product)]
    shared: dict[tuple, list] = {}
    for node in nodes:
        if isinstance(node, Sum):
            shared.setdefault(node.children, []).append(node)
    blocks = [g for g in shared.values() if len(g) > 1 and len(g[0].children) > 1]
    sparse = [n for g in shared.values() if not (len(g) > 1 and len(g[0].children) > 1) for n in g]
    by_shape: dict[tuple, list] = {}
    for block in blocks:
        by_shape.setdefault((len(block), len(block[0].children)), []).append(block)
    specs = []
    if products:
        specs.append(("product", products))
    if sparse:
        specs.append(("sum", sparse))
    specs.extend(("dense", [n for block in same for n in block]) for same in by_shape.values())
    return specs


def _build_group(kind: str, nodes: list, node_of: dict, params: "_ParamTable") -> Group:
    start = node_of[nodes[0]]
    stop = start + len(nodes)
    if kind == "dense":
        heads = [n for i, n in enumerate(nodes) if i == 0 or n.children != nodes[i - 1].children]
        head_ids = [[node_of[c] for c in head.children] for head in heads]
        children = torch.tensor(head_ids, dtype=torch.long)
        width = children.shape[1]
        first = params.dense_slots(nodes, node_of, head_ids)
        weights = torch.arange(first, first + len(nodes) * width).view(len(nodes), width)
        return Group(kind, start, stop, children, weights, torch.ones_like(weights, dtype=torch.bool))
    width = max(len(n.children) for n in nodes)
    rows, slots = [], []
    for node in nodes:
        kids = [node_of[c] for c in node.children]
        pad = width - len(kids)
        rows.append(kids + [0] * pad)
        if kind == "sum":
            first = params.sum_slots(node, node_of)
            own = [params.ZERO] if first is None else list(range(first, first + len(kids)))
            slots.append(own + [params.NEG_INF] * pad)
    children = torch.tensor(rows, dtype=torch.long)
    lengths = torch.tensor([len(n.children) for n in nodes])
    mask = torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)
    weights = torch.tensor(slots, dtype=torch.long) if kind == "sum" else None
    return Group(kind, start, stop, children, weights, mask)


class _ParamTable:
    """Assigns flat parameter positions; placeholder slots are mapped by ``resolve``."""

    NEG_INF, ZERO = -2, -3

    FIELDS = ("group", "init", "node", "child", "leaf", "state")

    def __init__(self):
        self.count = 0
        self.num_groups = 0
        self.group, self.node, self.child, self.leaf, self.state = (array("q") for _ in range(5))
        self.init = array("d")
        self._chunks: dict = {name: [] for name in self.FIELDS}
        self._leaf_group: dict[int, int] = {}

    def _flush(self) -> None:
        for name in self.FIELDS:
            values = getattr(self, name)
            if values:
                dtype = torch.float64 if name == "init" else torch.long
                self._chunks[name].append(torch.frombuffer(values, dtype=dtype).clone())
                setattr(self, name, array(values.typecode))

    def tensor(self, name: str) -> torch.Tensor:
        """Every parameter's ``name`` field (see FIELDS), in slot order."""
        self._flush()
        chunks = self._chunks[name]
        dtype = torch.float64 if name == "init" else torch.long
        return torch.cat(chunks) if chunks else torch.zeros(0, dtype=dtype)

    def dense_slots(self, nodes: list, node_of: dict, head_ids: list) -> int:
        """Add the parameters of a dense group's sums (blocks of equal size sharing the child
        ids ``head_ids[block]``) in one go; return the first slot."""
        self._flush()
        n, k = len(nodes), len(head_ids[0])
        first = self.count
        chunks = self._chunks
        chunks["group"].append(torch.arange(self.num_groups, self.num_groups + n).repeat_interleave(k))
        chunks["init"].append(torch.tensor([x.log_weights for x in nodes], dtype=torch.float64).view(-1))
        chunks["node"].append(torch.tensor([node_of[x] for x in nodes]).repeat_interleave(k))
        chunks["child"].append(torch.tensor(head_ids).repeat_interleave(n // len(head_ids), 0).view(-1))
        for name in ("leaf", "state"):
            chunks[name].append(torch.full((n * k,), -1, dtype=torch.long))
        self.count += n * k
        self.num_groups += n
        return first

    def _add(self, group, init, node=-1, child=-1, leaf=-1, state=-1) -> int:
        self.group.append(group)
        self.init.append(init)
        self.node.append(node)
        self.child.append(child)
        self.leaf.append(leaf)
        self.state.append(state)
        self.count += 1
        return self.count - 1

    def leaf_slot(self, index: int, leaf: Categorical, state: int) -> int:
        if state >= leaf.num_states or state not in leaf.support:
            return self.NEG_INF
        if len(leaf.support) == 1:
            return self.ZERO
        if index not in self._leaf_group:
            self._leaf_group[index] = self.num_groups
            self.num_groups += 1
        return self._add(self._leaf_group[index], leaf.logits[state], leaf=index, state=state)

    def sum_slots(self, node: Sum, node_of: dict) -> int | None:
        """Add the parameters of ``node``'s children (one group); return the first slot, or
        None for a single-child sum (weight log 1, no parameter)."""
        k = len(node.children)
        if k == 1:
            return None
        first = self.count
        group = self.num_groups
        self.num_groups += 1
        self.group.extend([group] * k)
        self.init.extend(node.log_weights)
        self.node.extend([node_of[node]] * k)
        self.child.extend([node_of[c] for c in node.children])
        self.leaf.extend([-1] * k)
        self.state.extend([-1] * k)
        self.count += k
        return first

    def resolve(self, slots: torch.Tensor) -> torch.Tensor:
        """Map the placeholder slots to ``count`` (log 0) and ``count + 1`` (log 1)."""
        slots = slots.clone()
        slots[slots == self.NEG_INF] = self.count
        slots[slots == self.ZERO] = self.count + 1
        return slots
