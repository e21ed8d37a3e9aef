"""Joint marginal tables over scopes of 2 or 3 variables, from one upward pass.

For a requested scope ``s`` every node ``n`` whose scope meets ``s`` has a table over
``t = s & scope(n)`` (its marginal distribution there; nodes are normalised, so tables of
a conditioned circuit are conditional marginals). Leaves give their distribution; a
product's table is the outer product of its children's tables (decomposability: they are
independent); a sum's table is the weighted sum of its children's tables (smoothness).

Only sums and leaves get stored *slots*: products are inlined into their parent sums'
edges as a list of "pieces" (slots over disjoint parts of ``t``), so a sum slot is
``sum_c w_c * outer(pieces_c)``, one batched einsum per (height, arity, piece pattern).
Sub-scope tables are shared between scopes and across the circuit.

Tables over a whole requested scope are never carried up to the root. By linearity the
root's table is the sum, over every sum node ``n`` and each child edge that *splits* the
scope (pieces over more than one part), of ``flow(n) * w * outer(pieces)``, where
``flow(n)`` is the probability that ``n`` is in the induced tree: one scalar top-down
pass (:func:`circuits.flows.flows`). So a pair's ``k x k`` work is done only where the
pair splits, and the rest is single-variable marginals along each variable's path:
``O(n log n * k)`` for circuits over a balanced variable tree (selective, RAT-SPN).

Slots are numbered per arity ``d`` and stored in chunks ``[B, slots, K**d]`` in
sorted-variable axis order (the leaves, then one chunk per step): each operand gathers
only from the chunks it reads, so the backward pass never touches unrelated slots. The
result is permuted into the order each scope lists its variables. The plan (slots, steps,
patterns) is built by :mod:`circuits.table_builder`; this module runs it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from circuits.compile import Plan
from circuits.table_builder import Builder, Factored, Source

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
    """For pair scopes, how the split terms (one per final slot and shared piece, in
    execution order, each ``outer(summed, shared)``) add up to each table. Terms of one
    table with the same shared piece are summed first (``sum_m outer(u_m, b) =
    outer(sum_m u_m, b)``), which leaves a few groups per table instead of every term.

    Returns ``(term_group [terms], group_first [G], group_swap [G], group_index [T, M])``:
    each term's group, a term of each group (for its shared piece), whether the group's
    shared piece is the table's first variable, and each table's groups padded with ``G``.
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
    """Run a table plan: returns ``[B', num_scopes, K, ..., K]`` joint marginals.

    Args:
        logp_ext: extended normalised log-parameters ``[B', P + 2]``.
        theta: leaf log-probabilities ``[B', L, K]``.
        flows: node flows ``[B', N]`` (:func:`circuits.flows.flows`).
    """
    batch, k = logp_ext.shape[0], plan.max_states
    pairs = table_plan.pair_index is not None
    chunks = {1: [torch.exp(theta).expand(batch, -1, -1)], 2: [], 3: []}
    tables = logp_ext.new_zeros(batch, table_plan.num_tables, k ** table_plan.arity)
    # Every pattern's edge weights and every final slot's flow in one gather each (their
    # backward is then one scatter, not one full-width zero buffer per pattern).
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
    """The slots of ``source`` from chunks ``[B, slots, X]`` -> ``[B, *source.shape, X]``."""
    parts = [chunks[c] for c in source.chunks]
    buffer = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
    return buffer.index_select(1, source.ids.reshape(-1)).view(batch, *source.ids.shape, buffer.shape[-1])


def _merged_weights(pattern, edge_weights: torch.Tensor) -> torch.Tensor:
    """Per merged edge, the sum of its edges' weights ``edge_weights [B', E]`` (the pattern's
    weight slots, exponentiated): ``[B', *pieces[0].shape]``."""
    _, positions = pattern.weights
    shape = pattern.a.ids.shape if isinstance(pattern, Factored) else pattern.pieces[0].ids.shape
    if pattern.direct:                                   # one edge per merged edge
        return edge_weights.reshape(-1, *shape)
    w = edge_weights.new_zeros(edge_weights.shape[0], shape.numel())
    return w.index_add(1, positions, edge_weights).view(-1, *shape)


def _factored_vectors(pattern: Factored, w: torch.Tensor, singles: list, batch: int):
    """The two factors of each term, first variable first: ``[B, S, R, K]`` each."""
    u = _weighted_sum(w, _gather(singles, pattern.a, batch))
    v = _gather(singles, pattern.b, batch)
    return (v, u) if pattern.swap else (u, v)


def _factored(pattern: Factored, w: torch.Tensor, singles: list, batch: int) -> torch.Tensor:
    return _sum_of_outers(*_factored_vectors(pattern, w, singles, batch))


def _sum_of_outers(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``sum_r outer(u[:, :, r], v[:, :, r])``: ``[B, S, R, K]`` twice -> ``[B, S, K, K]`` (a
    batched matrix product, which with its backward costs less than per-term fused
    multiply-adds)."""
    return torch.einsum("bsri,bsrj->bsij", u, v)


def _weighted_sum(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``sum_c w[..., c] * x[..., c, :]``: ``w [..., C]``, ``x [..., C, K]`` -> ``[..., K]``."""
    return _WeightedSum.apply(w, x)


# A contraction over a handful of children with K states. Forward: one fused multiply-add
# per child (a broadcast product reduced over a middle axis is a slow strided reduction, and
# einsum dispatches to tiny batched matmuls, slower still in the backward). Backward: one
# broadcast product per input, reduced over the last axis (fast), written with
# differentiable ops so that higher derivatives still work.

class _WeightedSum(torch.autograd.Function):
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


