"""Joint marginal tables over scopes of 2 or 3 variables.

Every node ``n`` whose scope meets a requested scope ``s`` has a table over ``t = s &
scope(n)``: a leaf its distribution, a product the outer product of its children's
tables, a sum the weighted sum of its children's. Only sums and leaves get stored slots
(products are inlined into their parents' edges as "pieces" over disjoint parts of
``t``). Tables over a whole requested scope are never carried to the root: by linearity
the root's table is the sum, over every sum ``n`` and each child edge that splits the
scope, of ``flow(n) * w * outer(pieces)`` (:func:`circuits.downward.flows`).

Slots of arity ``d`` are stored in chunks ``[B, slots, K**d]`` in sorted-variable axis
order (the leaves, then one chunk per step). :func:`build_table_plan` resolves the
(node, sub-scope) pairs of one list of scopes into steps by height and arity and their
edges into patterns of one shape; :func:`scope_tables` runs the plan.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from circuits.compile import Plan
from circuits.schedule import moved
from circuits.nodes import Categorical, Product, Sum

__all__ = ["TablePlan", "build_table_plan", "scope_tables"]

_EQUATIONS = {
    (1, 1, 1): "bsc,bsci,bscj,bscl->bsijl",
    (2, 1, 0): "bsc,bscjl,bsci->bsijl",
    (2, 1, 1): "bsc,bscil,bscj->bsijl",
    (2, 1, 2): "bsc,bscij,bscl->bsijl",
}


@dataclass
class TablePlan:
    """How to compute the tables of one list of scopes (built once, then cached)."""

    arity: int
    steps: list              # final steps (arity ``arity``) add flow-weighted splits to results
    num_tables: int          # distinct sorted scopes
    pair_index: tuple | None  # arity 2: how split terms add up to tables, see _pair_index
    result: torch.Tensor     # [num_scopes] table of each requested scope
    order: torch.Tensor      # [num_scopes, K**arity] user-order flat index -> sorted flat index

    def to(self, device) -> TablePlan:
        """The same plan with every index tensor on ``device``."""
        return moved(self, device)


def build_table_plan(plan: Plan, root, scopes: list[tuple[int, ...]]) -> TablePlan:
    """Plan the tables for ``scopes`` (validated tuples of 2 or 3 distinct variables)."""
    builder = Builder(plan)
    arity = len(scopes[0])
    tables = {}
    for s in scopes:
        t = tuple(sorted(s))
        if t not in tables:
            tables[t] = len(tables)
            builder.final(root, t)
    steps = builder.layout(arity, tables)
    pair_index = _pair_index(steps, len(tables)) if arity == 2 else None
    result = torch.tensor([tables[tuple(sorted(s))] for s in scopes], dtype=torch.long)
    k = plan.max_states
    order = torch.empty(len(scopes), k ** arity, dtype=torch.long)
    for row, scope in enumerate(scopes):
        ranked = sorted(scope)
        for flat, states in enumerate(itertools.product(range(k), repeat=arity)):
            sorted_states = [states[scope.index(v)] for v in ranked]
            order[row, flat] = sum(s * k ** (arity - 1 - m) for m, s in enumerate(sorted_states))
    return TablePlan(arity, steps, len(tables), pair_index, result, order)


def _pair_index(steps: list, num_tables: int) -> tuple:
    """For pair scopes, how the split terms ``outer(summed, shared)`` add up to each table,
    terms with one table and shared piece summed first: ``(term_group [terms], group_first
    [G], group_swap [G], group_index [T, M])`` (each term's group, a term of each group,
    whether its shared piece is the first variable, each table's groups padded with ``G``).
    """
    keys = []
    for step in steps:
        if step.targets is not None:
            for pattern in step.patterns:
                per_row = step.targets[pattern.rows].unsqueeze(1).expand_as(pattern.shared_slots)
                for table, slot in zip(per_row.reshape(-1).tolist(), pattern.shared_slots.reshape(-1).tolist()):
                    keys.append((table, slot, pattern.swap))
    group_of: dict = {}
    term_group = torch.tensor([group_of.setdefault(key, len(group_of)) for key in keys], dtype=torch.long)
    group_first = torch.zeros(len(group_of), dtype=torch.long)
    group_first[term_group.flip(0)] = torch.arange(len(keys) - 1, -1, -1)
    group_swap = torch.tensor([swap for _, _, swap in group_of], dtype=torch.bool)
    members: list = [[] for _ in range(num_tables)]
    for group, (table, _, _) in enumerate(group_of):
        members[table].append(group)
    width = max(len(m) for m in members)
    group_index = torch.full((num_tables, width), len(group_of), dtype=torch.long)
    for table, m in enumerate(members):
        group_index[table, :len(m)] = torch.tensor(m, dtype=torch.long)
    return term_group, group_first, group_swap, group_index


def scope_tables(plan: Plan, table_plan: TablePlan, logp_ext: torch.Tensor,
                 theta: torch.Tensor, flows: torch.Tensor) -> torch.Tensor:
    """Joint marginals ``[B', num_scopes, K, ..., K]`` from ``logp_ext [B', P + 2]``, the
    leaf log-probabilities ``theta [B', L, K]`` and node ``flows [B', N]``."""
    batch, k = logp_ext.shape[0], plan.max_states
    pairs = table_plan.pair_index is not None
    chunks = {1: [torch.exp(theta).expand(batch, -1, -1)], 2: [], 3: []}
    tables = logp_ext.new_zeros(batch, table_plan.num_tables, k ** table_plan.arity)
    patterns = [p for step in table_plan.steps for p in step.patterns]
    slots = [p.weights[0] for p in patterns]
    edge_weights = iter(torch.exp(logp_ext).index_select(1, torch.cat(slots)).split([len(s) for s in slots], 1))
    nodes = [step.nodes[p.rows] if pairs else step.nodes for step in table_plan.steps
             if step.targets is not None for p in (step.patterns if pairs else [None])]
    final_flows = iter(flows.index_select(1, torch.cat(nodes)).split([len(n) for n in nodes], 1) if nodes else [])
    summed_terms, shared_terms = [], []
    for step in table_plan.steps:
        if pairs and step.targets is not None:
            for pattern in step.patterns:              # pair terms, summed by pair_index below
                w = _merged_weights(pattern, next(edge_weights))
                flow = next(final_flows)
                summed = _weighted_sum(w * flow[..., None, None], _gather(chunks[1], pattern.a, batch))
                summed_terms.append(summed.flatten(1, 2))
                shared_terms.append(_gather(chunks[1], pattern.b, batch).flatten(1, 2))
            continue
        out = logp_ext.new_zeros(batch, step.stop - step.start, k ** step.arity)
        for pattern in step.patterns:
            w = _merged_weights(pattern, next(edge_weights))
            if isinstance(pattern, Factored):
                part = _factored(pattern, w, chunks[1], batch)
            else:
                operands = [_gather(chunks[d], src, batch) for src, d in zip(pattern.pieces, pattern.arities)]
                if pattern.key == ("a",):
                    part = _weighted_sum(w, operands[0])
                else:
                    operands = [t.view(*t.shape[:3], *([k] * d)) for t, d in zip(operands, pattern.arities)]
                    part = torch.einsum(_EQUATIONS[pattern.key], w, *operands)
            out = out.index_add(1, pattern.rows,
                                part.reshape(batch, pattern.rows.numel(), out.shape[2]))
        if step.targets is None:
            chunks[step.arity].append(out)
        elif not pairs:
            weighted = out * next(final_flows).unsqueeze(-1)
            tables = tables.index_add(1, step.targets, weighted)
    if pairs:
        term_group, group_first, group_swap, group_index = table_plan.pair_index
        summed = logp_ext.new_zeros(batch, len(group_first), k).index_add(1, term_group, torch.cat(summed_terms, 1))
        shared = torch.cat(shared_terms, 1).index_select(1, group_first)
        swap = group_swap.view(1, -1, 1)
        pad = logp_ext.new_zeros(batch, 1, k)
        first = torch.cat([torch.where(swap, shared, summed), pad], 1)
        second = torch.cat([torch.where(swap, summed, shared), pad], 1)
        first = first.index_select(1, group_index.reshape(-1)).view(batch, *group_index.shape, k)
        second = second.index_select(1, group_index.reshape(-1)).view(batch, *group_index.shape, k)
        tables = _sum_of_outers(first, second).reshape(batch, group_index.shape[0], k * k)
    tables = tables.index_select(1, table_plan.result)
    tables = tables.gather(2, table_plan.order.expand(batch, -1, -1))
    return tables.view(batch, tables.shape[1], *([k] * table_plan.arity))


def _gather(chunks: list, source: Source, batch: int) -> torch.Tensor:
    """The slots of ``source`` from chunks ``[B, slots, X]`` -> ``[B, *source.ids.shape, X]``."""
    parts = [chunks[c] for c in source.chunks]
    buffer = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
    return buffer.index_select(1, source.ids.reshape(-1)).view(batch, *source.ids.shape, buffer.shape[-1])


def _merged_weights(pattern, edge_weights: torch.Tensor) -> torch.Tensor:
    """Per merged edge, the sum of its edges' weights ``edge_weights [B', E]``."""
    _, positions = pattern.weights
    shape = pattern.a.ids.shape if isinstance(pattern, Factored) else pattern.pieces[0].ids.shape
    if pattern.direct:                                   # one edge per merged edge
        return edge_weights.reshape(-1, *shape)
    w = edge_weights.new_zeros(edge_weights.shape[0], shape.numel())
    return w.index_add(1, positions, edge_weights).view(-1, *shape)


def _factored(pattern: Factored, w: torch.Tensor, singles: list, batch: int) -> torch.Tensor:
    """The terms' outer products ``[B, S, K, K]``, each of two factors ``[B, S, R, K]``."""
    u = _weighted_sum(w, _gather(singles, pattern.a, batch))
    v = _gather(singles, pattern.b, batch)
    return _sum_of_outers(v, u) if pattern.swap else _sum_of_outers(u, v)


def _sum_of_outers(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``sum_r outer(u[:, :, r], v[:, :, r])``: ``[B, S, R, K]`` twice -> ``[B, S, K, K]``."""
    return torch.einsum("bsri,bsrj->bsij", u, v)


def _weighted_sum(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``sum_c w[..., c] * x[..., c, :]``: ``w [..., C]``, ``x [..., C, K]`` -> ``[..., K]``."""
    return _WeightedSum.apply(w, x)


class _WeightedSum(torch.autograd.Function):
    """Forward: one fused multiply-add per child; backward: differentiable ops."""

    @staticmethod
    def forward(ctx, w, x):
        ctx.save_for_backward(w, x)
        ws, xs = w.unsqueeze(-1).unbind(-2), x.unbind(-2)
        out = ws[0] * xs[0]
        for c in range(1, len(ws)):
            out = torch.addcmul(out, ws[c], xs[c])
        return out

    @staticmethod
    def backward(ctx, grad):
        w, x = ctx.saved_tensors
        grad_w = (grad.unsqueeze(-2) * x).sum(-1) if ctx.needs_input_grad[0] else None
        grad_x = grad.unsqueeze(-2) * w.unsqueeze(-1) if ctx.needs_input_grad[1] else None
        return grad_w, grad_x


# --- planning ---------------------------------------------------------------------------
@dataclass
class Pattern:
    key: tuple               # the shape of its pieces (the einsum in _EQUATIONS)
    arities: tuple           # arity of each piece
    rows: torch.Tensor       # [S_p] slot positions within the step
    weights: tuple           # (slots [E], positions [E]): edge weights added into [S_p * C]
    pieces: list             # per piece: Source of [S_p, C] slots in that piece's arity
    direct: bool = False     # positions == arange(S_p * C): no two edges merge


@dataclass
class Factored:
    """Outer products of two single-variable pieces, grouped by the shared piece ``b``:
    ``sum_r (sum_l w_lr a_l) (x) b_r``; ``swap`` when ``b`` is the first variable's piece."""

    rows: torch.Tensor       # [S_p]
    weights: tuple           # (slots [E], positions [E]): edge weights added into [S_p * R * C]
    a: "Source"             # [S_p, R, C] slots of the summed pieces (arity 1)
    b: "Source"             # [S_p, R] slots of the shared pieces (arity 1)
    swap: bool
    shared_slots: torch.Tensor | None = None   # [S_p, R] global slot ids of ``b`` (pair terms)
    direct: bool = False     # positions == arange(S_p * R * C): no two edges merge


@dataclass
class Source:
    """Slots to gather: positions ``ids`` in the concatenation of ``chunks`` of one arity."""

    chunks: tuple
    ids: torch.Tensor


@dataclass
class TableStep:
    arity: int
    start: int
    stop: int
    patterns: list
    nodes: torch.Tensor | None = None     # final steps: node id of each slot (for its flow)
    targets: torch.Tensor | None = None   # final steps: result table of each slot


class Builder:
    """Resolves (node, sub-scope) pairs into slots and lays the slots out in steps."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.slots: dict = {}            # key -> (height, arity, edges)
        self.weight_slots = _sum_weight_slots(plan)

    def final(self, root, scope: tuple) -> tuple:
        if isinstance(root, Sum):
            return self._sum_slot(root, scope)
        key = ("root", scope)
        if key not in self.slots:
            height = int(self.plan.layer_of[self.plan.node_of[root]]) + 1
            one = self.plan.num_params + 1
            self.slots[key] = (height, len(scope), [(one, self._resolve(root, scope))])
        return key

    def _resolve(self, node, scope: tuple) -> list:
        if isinstance(node, Categorical):
            return [(("leaf", self.plan.node_of[node] - 1), scope)]
        if isinstance(node, Product):
            pieces = []
            for child in node.children:
                part = tuple(v for v in scope if v in child.scope)
                if part:
                    pieces.extend(self._resolve(child, part))
            return pieces
        return [(self._sum_slot(node, scope), scope)]

    def _sum_slot(self, node, scope: tuple) -> tuple:
        key = (self.plan.node_of[node], scope)
        if key not in self.slots:
            slots = self.weight_slots[key[0]]
            edges = [(slots[j], self._resolve(child, scope)) for j, child in enumerate(node.children)]
            self.slots[key] = (int(self.plan.layer_of[key[0]]), len(scope), edges)
        return key

    def layout(self, final_arity: int, tables: dict) -> list:
        """Number the slots and group them in steps (slots of ``final_arity`` add their
        splitting edges, flow-weighted, into ``tables``)."""
        index = {("leaf", i): i for i in range(self.plan.num_leaves)}
        num_slots = {1: self.plan.num_leaves, 2: 0, 3: 0}
        steps = []
        ordered = sorted(self.slots.items(), key=lambda item: (item[1][0], item[1][1]))
        for (height, arity), items in itertools.groupby(ordered, key=lambda item: item[1][:2]):
            items = list(items)
            start = num_slots[arity]
            for offset, (key, _) in enumerate(items):
                index[key] = start + offset
            num_slots[arity] = start + len(items)
            final = arity == final_arity
            step = TableStep(arity, start, start + len(items), self._patterns(items, index, skip_alias=final))
            if final:
                step.nodes = torch.tensor([self.plan.root if key[0] == "root" else key[0]
                                           for key, _ in items], dtype=torch.long)
                step.targets = torch.tensor([tables[key[1]] for key, _ in items], dtype=torch.long)
            steps.append(step)
        for step in steps:
            for pattern in step.patterns:
                if isinstance(pattern, Factored):
                    pattern.shared_slots = pattern.b
                    pattern.a = _localise(steps, self.plan.num_leaves, 1, pattern.a)
                    pattern.b = _localise(steps, self.plan.num_leaves, 1, pattern.b)
                else:
                    pattern.pieces = [_localise(steps, self.plan.num_leaves, d, ids)
                                      for ids, d in zip(pattern.pieces, pattern.arities)]
        return steps

    def _patterns(self, items, index, skip_alias: bool) -> list:
        grouped: dict = {}
        for row, (_, (_, arity, edges)) in enumerate(items):
            for weight, pieces in edges:
                key, ordered = _pattern_key(pieces)
                ids = tuple(index[slot] for slot, _ in ordered)
                grouped.setdefault(key, {}).setdefault(row, {}).setdefault(ids, []).append(weight)
        patterns = []
        for key, rows in grouped.items():
            if skip_alias and key == ("a",):
                continue
            if key == (1, 1):
                patterns.extend(self._factored(rows))
                continue
            arities = {("a",): (items[0][1][1],), (1, 1, 1): (1, 1, 1)}.get(key, (2, 1))
            for bucket in _buckets(rows, len):
                merged = [list(bucket[r].items()) for r in bucket]
                width = len(merged[0])
                pieces = [torch.zeros(len(bucket), width, dtype=torch.long) for _ in arities]
                slots, positions = [], []
                for r, edges in enumerate(merged):
                    for c, (ids, ws) in enumerate(edges):
                        for p, slot in enumerate(ids):
                            pieces[p][r, c] = slot
                        slots.extend(ws)
                        positions.extend([r * width + c] * len(ws))
                patterns.append(Pattern(key, arities, torch.tensor(list(bucket), dtype=torch.long),
                                        _as_tensors(slots, positions), pieces,
                                        direct=positions == list(range(len(bucket) * width))))
        return patterns

    def _factored(self, rows: dict) -> list[Factored]:
        """Group each slot's (a, b) edges by the side with fewer distinct pieces."""
        distinct = [sum(len({ids[side] for ids in edges}) for edges in rows.values()) for side in (0, 1)]
        shared = 1 if distinct[1] <= distinct[0] else 0
        grouped = {}
        for row, edges in rows.items():
            by_shared: dict = {}
            for ids, weights in edges.items():
                by_shared.setdefault(ids[shared], []).append((ids[1 - shared], weights))
            grouped[row] = list(by_shared.items())
        out = []
        for bucket in _buckets(grouped, lambda g: (len(g), max(len(summed) for _, summed in g))):
            num_r, num_c = len(next(iter(bucket.values()))), max(len(sm) for g in bucket.values() for _, sm in g)
            a = torch.zeros(len(bucket), num_r, num_c, dtype=torch.long)
            b = torch.zeros(len(bucket), num_r, dtype=torch.long)
            slots, positions = [], []
            for s, group in enumerate(bucket.values()):
                for r, (shared_id, summed) in enumerate(group):
                    b[s, r] = shared_id
                    for c, (other, ws) in enumerate(summed):
                        a[s, r, c] = other
                        slots.extend(ws)
                        positions.extend([(s * num_r + r) * num_c + c] * len(ws))
            out.append(Factored(torch.tensor(list(bucket), dtype=torch.long),
                                _as_tensors(slots, positions), a, b, swap=shared == 0,
                                direct=positions == list(range(a.numel()))))
        return out


def _localise(steps: list, num_leaves: int, arity: int, ids) -> Source:
    """Global slot ids of one arity -> the chunks holding them and positions in their concatenation."""
    ids = torch.as_tensor(ids, dtype=torch.long)
    bounds = ([(0, num_leaves)] if arity == 1 else []) + [
        (step.start, step.stop) for step in steps if step.arity == arity]
    starts = torch.tensor([lo for lo, _ in bounds], dtype=torch.long)
    chunk_of = torch.bucketize(ids, starts, right=True) - 1
    used = sorted(set(chunk_of.reshape(-1).tolist()))
    offset, base = {}, 0
    for c in used:
        offset[c] = base - bounds[c][0]
        base += bounds[c][1] - bounds[c][0]
    shift = torch.tensor([offset.get(c, 0) for c in range(len(bounds))], dtype=torch.long)
    return Source(tuple(used), ids + shift[chunk_of])


def _buckets(rows: dict, size) -> list[dict]:
    """Split ``{row: edges}`` into dicts whose rows have equal ``size(edges)`` (no padding waste)."""
    buckets: dict = {}
    for row, edges in rows.items():
        buckets.setdefault(size(edges), {})[row] = edges
    return list(buckets.values())


def _as_tensors(slots: list, positions: list) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(slots, dtype=torch.long), torch.tensor(positions, dtype=torch.long)


def _pattern_key(pieces: list) -> tuple[tuple, list]:
    """Classify an edge's pieces; returns the equation key and the pieces in operand order."""
    if len(pieces) == 1:
        return ("a",), pieces
    if all(len(scope) == 1 for _, scope in pieces):
        ordered = sorted(pieces, key=lambda p: p[1][0])
        return (1,) * len(pieces), ordered
    pair, single = sorted(pieces, key=lambda p: -len(p[1]))
    position = sorted(pair[1] + single[1]).index(single[1][0])
    return (2, 1, position), [pair, single]


def _sum_weight_slots(plan: Plan) -> dict:
    """Sum node id -> the weight slot of each of its children, in child order."""
    slots = {}
    for group in plan.groups():
        if group.kind == "product":
            continue
        for row, node in enumerate(range(group.start, group.stop)):
            width = int(group.edge_mask[row].sum())
            slots[node] = group.weights[row, :width].tolist()
    return slots
