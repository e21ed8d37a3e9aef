"""The upward pass's first layer fused with the leaf lookup, where the structure allows it.

When the first layer is one ``product`` step over leaves only (the input products of
RAT-SPNs and EinsumNetworks) and no later step reads the leaf layer, ``log p(x)`` need not
materialise the leaf layer ``[n_0, B]`` and then gather the products' children from it:
grouping the products by the tuple of variables their children cover (``U`` tuples of
``W`` variables, ``I`` products each), one lookup reads every child's value straight from
the leaf tables with the states of the tuple's variables (state 0 of every table holds
log 1, so that a missing value, -1, reads it at ``x + 1``), and a sum over ``W`` gives the
products. Same numbers as the unfused pass (the same additions), one ``[M * W, B]`` pass
fewer.

The lookup has two layouts. Without autograd the tables are rows ``[U * W * (K + 1), I]``
(the ``I`` products' values side by side) and one ``index_select`` of whole rows reads
them (contiguous rows, where an elementwise gather reads value by value). With autograd
the tables are
``[U, I, W, K + 1]``. On CPU, where they are finite, one batched matmul with the states'
one-hot columns reads and sums them (its backward a matmul too); otherwise (``log 0`` in
a table, as ``0 * -inf`` is NaN; or on an accelerator) one ``gather``: the backward of a
row lookup (an ``index_add`` or ``scatter_add`` over ``[U * W * B, I]``) costs more than
the forward saves.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from circuits.program import Program, kept_structure

if TYPE_CHECKING:
    from circuits.upward import KeptWeights

__all__ = ["LeafProducts", "leaf_products"]


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
        """The first layer's log-values ``[M, B]`` from ``logp_ext [1, P + 2]`` and the
        assignments ``x [B, V]`` (-1 = missing: column 0 of every table row holds log 1).
        ``kept``: the :class:`~circuits.upward.KeptWeights` of ``logp_ext``, which then
        keeps the leaf tables for the next passes."""
        return self.in_order(self.grouped(logp_ext, x, kept))

    def grouped(self, logp_ext: torch.Tensor, x: torch.Tensor,
                kept: KeptWeights | None = None) -> torch.Tensor:
        """:meth:`values` with the products grouped by tuple: ``[U * I, B]``."""
        u, _, _, i = self.slots.shape
        batch = x.shape[0]
        if self._autograd(logp_ext):
            table = logp_ext.reshape(-1).take(self.gather_slots)            # [U, I, W, K + 1]
            if table.device.type == "cpu" and bool(torch.isfinite(table).all()):
                return self._one_hot_sum(table, x).view(u * i, batch)
            # summed in the gather's own layout: a cheaper backward than the row lookup's
            return self._gathered(logp_ext, x, table).sum(2).view(u * i, batch)
        return self.children(logp_ext, x, kept).sum(1).transpose(1, 2).reshape(u * i, batch)

    def _one_hot_sum(self, table: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``sum_w table[u, i, w, 1 + x_w]`` as one batched matmul with the states' one-hot
        columns: ``table [U, I, W, K + 1]`` -> ``[U, I, B]``. Its backward is the transposed
        matmul, where the gather's is a ``scatter_add`` into zeros. Only for finite tables:
        a zero of the one-hot times ``log 0`` would be NaN."""
        u, i, w, k1 = table.shape
        batch = x.shape[0]
        picked = self._columns(x).view(u, w, 1, batch)
        one_hot = table.new_zeros(u, w, k1, batch).scatter_(2, picked, 1.0)
        return torch.bmm(table.view(u, i, w * k1), one_hot.view(u, w * k1, batch))

    def in_order(self, grouped: torch.Tensor) -> torch.Tensor:
        """Grouped rows ``[U * I, B]`` in the order ``program`` reads them ``[M, B]``."""
        return grouped if self.order is None else grouped.index_select(0, self.order)

    def children(self, values_ext: torch.Tensor, x: torch.Tensor,
                 kept: KeptWeights | None = None) -> torch.Tensor:
        """Every grouped product's child values ``[U, W, B, I]`` read from the leaf
        parameters ``values_ext [1, P + 2]`` (``logp_ext``, or any per-leaf quantity laid out
        like it) at the states ``x [B, V]``; ``kept`` as in :meth:`values`."""
        if self._autograd(values_ext):
            return self._gathered(values_ext, x).permute(0, 2, 3, 1)
        u, w, _, i = self.slots.shape
        table = (self.table(values_ext) if kept is None
                 else kept.get(self, lambda: self.table(values_ext)))
        rows = x.T.index_select(0, self.variables).add_(self.row_base).view(-1)
        return table.index_select(0, rows).view(u, w, x.shape[0], i)

    def weighted_children(self, values_ext: torch.Tensor, x: torch.Tensor,
                          weights: torch.Tensor) -> torch.Tensor:
        """``sum_i children(values_ext, x)[u, w, b, i] * weights[u, i, b]`` ``[U, W, B]``
        for per-product weights ``weights [U, I, B]`` (grouped rows), without the children
        ``[U, W, B, I]``: one batched matmul of the tables with the weights gives every
        state's sum, ``[U, W, K + 1, B]``, and each position reads its own state. For finite
        tables only (an unread state's ``inf`` times a zero weight would be NaN in the
        backward). The elementwise route gathers ``[U, W, B, I]``, multiplies it by the
        broadcast weights and sums it (and the backward scatters it back); this is a matmul
        into ``[U, W * (K + 1), B]`` and a gather of ``[U, W, B]``."""
        u, w, k1, i = self.slots.shape
        batch = x.shape[0]
        table = values_ext.reshape(-1).take(self.gather_slots)             # [U, I, W, K + 1]
        per_state = torch.bmm(table.view(u, i, w * k1).mT, weights)         # [U, W * K1, B]
        picked = self._columns(x).view(u, w, 1, batch)
        return per_state.view(u, w, k1, batch).gather(2, picked).squeeze(2)

    @staticmethod
    def _autograd(values_ext: torch.Tensor) -> bool:
        return torch.is_grad_enabled() and values_ext.requires_grad

    def _gathered(self, values_ext: torch.Tensor, x: torch.Tensor,
                  table: torch.Tensor | None = None) -> torch.Tensor:
        """The autograd layout's lookup: child values ``[U, I, W, B]`` (``table``: the
        values' ``[U, I, W, K + 1]`` layout, if already taken)."""
        u, w, _, i = self.slots.shape
        batch = x.shape[0]
        if table is None:
            table = values_ext.reshape(-1).take(self.gather_slots)          # [U, I, W, K + 1]
        picked = self._columns(x).view(u, 1, w, batch)
        return table.gather(3, picked.expand(u, i, w, batch))

    def _columns(self, x: torch.Tensor) -> torch.Tensor:
        """The table column each tuple position reads, ``1 + state`` (0: missing, log 1),
        ``[U * W, B]``, from the assignments ``x [B, V]``."""
        return x.T.index_select(0, self.variables).add_(1)

    def table(self, logp_ext: torch.Tensor) -> torch.Tensor:
        """The leaf tables as rows ``[U * W * (K + 1), I]``: row ``(u, w, 1 + state)`` holds
        the ``I`` products' child values at that state, row ``(u, w, 0)`` log 1."""
        return logp_ext.reshape(-1).take(self.slots).view(-1, self.slots.shape[3])


def leaf_products(program: Program) -> LeafProducts | None:
    """The fused first layer of ``program``, or None where the structure does not allow it
    (kept on the program after the first call)."""
    cached = getattr(program, "_leaf_products", False)
    if cached is False:
        with kept_structure():
            cached = program._leaf_products = _build(program)
    return cached


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
    """A copy of ``program`` whose steps read layer 1 in grouped order (row ``r`` at
    ``inverse[r]``), or None where a step reads layer 1 together with other layers."""
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
