"""The flat parameter vector's layout, built while compiling (:mod:`circuits.compile`).

Each leaf with more than one support state and each sum with more than one child gets one
group of consecutive slots; a slot's fields (its group, initial logit, owning sum node and
child, or leaf and state) are collected in chunks and concatenated once. Placeholder slots
(``NEG_INF``: log 0, ``ZERO``: log 1) stand for the two constants that extend the
normalised vector and are mapped to ``num_params`` and ``num_params + 1`` by
:meth:`ParamTable.resolve`.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

__all__ = ["ParamTable"]


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
