"""A replay buffer's ``next_*`` column stored once where a later row already holds it.

The next state (or observations) of a transition is, in the middle of an episode, the state
of the env copy's next stored transition, so a buffer that stores both keeps most of them
twice. :class:`NextValues` keeps, for each row ``p``, either a reference to a later row
``r`` whose current value is bit for bit ``p``'s next value, or the value itself in a
growable side store (episode ends, relabelled copies, rows still waiting for their later
row). Matching is by content (a checksum of the bytes, then an exact byte comparison), so
it is exact for any stream of rows: sampled values are the values given to :meth:`store`.

A reference only ever points to a later row: the buffer overwrites its oldest rows
first, so the row referred to outlives the one that refers to it.

```python
nxt = NextValues(capacity, shape=(state_dim,), dtype=np.float32)
nxt.release(rows)                        # rows about to be overwritten, before writing them
current[rows] = state                    # the buffer's own column
nxt.store(rows, next_state, current)     # after writing the current values of ``rows``
nxt.gather(index, current)               # [B, *shape] next values of rows ``index``
```
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["NextValues"]


class NextValues:
    """The next values ``[capacity, *shape]`` of a buffer's rows, by reference or stored.

    ``ref[p]``: the row whose current value is ``p``'s next value (-1: none); ``slot[p]``:
    ``p``'s place in :attr:`extra` (-1: none). Exactly one of the two is set for a stored
    row. Rows waiting for a later equal value are kept by a checksum of their next value.
    """

    def __init__(self, capacity: int, shape: tuple[int, ...], dtype: Any) -> None:
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.ref = np.full(capacity, -1, dtype=np.int64)
        self.slot = np.full(capacity, -1, dtype=np.int64)
        self.extra = np.zeros((min(capacity, 64), *self.shape), dtype=self.dtype)
        self._free = list(range(len(self.extra) - 1, -1, -1))   # a stack of free slots
        self._waiting: dict[int, dict[int, None]] = {}          # checksum -> rows (ordered)
        self._hash = np.zeros(capacity, dtype=np.int64)         # a waiting row's checksum
        words = self.dtype.itemsize * int(np.prod(self.shape, dtype=np.int64))
        self._words = -(-words // 4)                            # uint32 words per value
        # the key reads every word: rows waiting under one key then hold one content, which
        # the first later row with that key (that content) takes off the list at once; a key
        # of some words only would let rows that never match pile up under it, each new row
        # compared with all of them
        self._weights = np.random.default_rng(0).integers(
            1, 2**62, size=self._words, dtype=np.int64) | 1     # fixed: content only

    # --- writing ------------------------------------------------------------------------
    def release(self, rows: np.ndarray) -> None:
        """Forget ``rows`` (about to be overwritten): free their slots, stop waiting."""
        stored = rows[self.slot[rows] >= 0]
        for p in stored.tolist():
            self._free.append(int(self.slot[p]))
            self._unwait(p)
        self.ref[rows] = -1
        self.slot[rows] = -1

    def store(self, rows: np.ndarray, values: np.ndarray, current: np.ndarray) -> None:
        """Record ``values [M, *shape]`` as the next values of the new ``rows [M]``, whose
        current values ``current[rows]`` are already written: rows that waited for one of
        those current values point to it; the new values wait in the side store."""
        waiting = self._waiting
        if waiting:
            first_row = {}                        # each key's first new row
            for r, key in zip(rows.tolist(), self._keys(current[rows]).tolist()):
                first_row.setdefault(key, r)
            pairs = [(p, r) for key, r in first_row.items() for p in waiting.get(key, ())]
            if pairs:
                waited, later = np.array(pairs, dtype=np.int64).T
                equal = (self._words_of(self.extra[self.slot[waited]])
                         == self._words_of(current[later])).all(axis=1)   # bit for bit
                waited, first = np.unique(waited[equal], return_index=True)
                if len(waited):                   # each to the first later row equal to it
                    self._free.extend(self.slot[waited].tolist())
                    for p, key in zip(waited.tolist(), self._hash[waited].tolist()):
                        self._unwait(p, key)
                    self.ref[waited] = later[equal][first]
                    self.slot[waited] = -1
        values = np.asarray(values, dtype=self.dtype)
        slots = self._take_slots(len(rows))
        self.extra[slots] = values
        self.slot[rows] = slots
        keys = self._keys(values)
        self._hash[rows] = keys
        for p, key in zip(rows.tolist(), keys.tolist()):
            waiting.setdefault(key, {})[p] = None

    def _words_of(self, values: np.ndarray) -> np.ndarray:
        """Each value's bytes as uint32 words ``[M, words]`` (zero-padded)."""
        flat = np.ascontiguousarray(values).reshape(len(values), -1).view(np.uint8)
        pad = 4 * self._words - flat.shape[1]
        if pad:
            flat = np.concatenate([flat, np.zeros((len(flat), pad), np.uint8)], axis=1)
        return flat.view(np.uint32)

    def _keys(self, values: np.ndarray) -> np.ndarray:
        """A checksum ``[M]`` of each value's bytes (uint32 words times fixed odd weights,
        summed with int64 wrap-around): equal bytes, equal keys."""
        words = self._words_of(values).astype(np.int64)
        return (words * self._weights).sum(axis=1)     # array integer overflow wraps silently

    def _unwait(self, p: int, key: int | None = None) -> None:
        key = int(self._hash[p]) if key is None else key
        waiting = self._waiting.get(key)
        if waiting is not None and waiting.pop(p, 0) is None and not waiting:
            del self._waiting[key]

    def _take_slots(self, count: int) -> list[int]:
        """``count`` free slots of the side store (grown as needed), taken off the stack."""
        while len(self._free) < count:
            self._grow()
        slots = self._free[len(self._free) - count:][::-1]
        del self._free[len(self._free) - count:]
        return slots

    def _grow(self) -> None:
        old = len(self.extra)
        size = min(max(2 * old, 1), len(self.ref))
        if size == old:     # every row has a slot already: the caller released none
            raise RuntimeError("NextValues: no free slot; release rows before storing them")
        grown = np.zeros((size, *self.shape), dtype=self.dtype)
        grown[:old] = self.extra
        self.extra = grown
        self._free.extend(range(size - 1, old - 1, -1))

    # --- reading ------------------------------------------------------------------------
    def gather(self, index: np.ndarray, current: np.ndarray) -> np.ndarray:
        """The next values ``[len(index), *shape]`` of rows ``index``."""
        ref = self.ref[index]
        stored = np.flatnonzero(ref < 0)    # few: episode ends, the newest rows
        out = current[np.maximum(ref, 0)]   # one gather, then the few stored ones
        if len(stored):
            out[stored] = self.extra[self.slot[index[stored]]]
        return out

    @property
    def stored(self) -> int:
        """Rows whose next value is kept in the side store (not by reference)."""
        return int((self.slot >= 0).sum())

    # --- checkpoints --------------------------------------------------------------------
    def state_dict(self, size: int) -> dict[str, np.ndarray]:
        """Rows ``0..size-1``: each row's reference (-1: stored) and the stored values in
        row order."""
        ref = self.ref[:size].copy()
        stored = np.flatnonzero(ref < 0)
        return {"ref": ref, "values": self.extra[self.slot[stored]]}

    def load_state_dict(self, state: dict[str, np.ndarray], size: int) -> None:
        """Rows ``0..size-1`` from :meth:`state_dict` (rows that were waiting for a later row
        stay stored: the values are the same, only less shared)."""
        ref = np.asarray(state["ref"], dtype=np.int64)
        values = np.asarray(state["values"], dtype=self.dtype)
        stored = np.flatnonzero(ref < 0)
        if ref.shape != (size,) or values.shape != (len(stored), *self.shape) or \
                bool((ref >= size).any()):
            raise ValueError(f"next values do not match the {size} rows of the checkpoint")
        self.__init__(len(self.ref), self.shape, self.dtype)
        self.ref[:size] = ref
        slots = self._take_slots(len(stored))
        self.extra[slots] = values
        self.slot[stored] = slots

    def load_values(self, values: np.ndarray) -> None:
        """Rows ``0..len(values)-1`` from plain next values (a checkpoint written before next
        values were shared): every one stored."""
        self.load_state_dict({"ref": np.full(len(values), -1, dtype=np.int64),
                              "values": values}, len(values))
