"""Planning the joint marginal tables of :mod:`circuits.tables`: resolve every (node,
sub-scope) pair of the requested scopes into slots, group the slots in steps by height and
arity, and their edges in patterns of one shape (one batched operation each).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from circuits.compile import Plan
from circuits.nodes import Categorical, Product, Sum

__all__ = ["Builder", "Factored", "Pattern", "Source", "Step"]


@dataclass
class Pattern:
    key: tuple               # the shape of its pieces (the einsum in circuits.tables)
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

    @property
    def shape(self) -> torch.Size:
        return self.ids.shape


@dataclass
class Step:
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
        """Number the slots and group them in steps. Slots of ``final_arity`` are not stored:
        their splitting edges are added, flow-weighted, into the result ``tables``."""
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
            step = Step(arity, start, start + len(items), self._patterns(items, index, skip_alias=final))
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
