"""A uniform replay buffer of multi-agent transitions, sampled as :class:`Batch` tuples.

Stores global states (for centralised critics and policies) and, when ``obs_dim`` is
given, per-agent observations (for decentralised agents), in preallocated numpy arrays.
Without ``obs_dim`` it holds no observation arrays and ignores the transitions' ``obs`` and
``next_obs`` (which may be ``None``).
Next states or next observations of at least ``SHARED_BYTES`` per row that equal, bit for
bit, a later row's state or observations are kept by reference to that row
(:mod:`~spnpolicy.training.next_values`): in the middle of episodes that is every one, so
the buffer (and each checkpoint) holds them about once instead of twice.

```python
buffer = ReplayBuffer(capacity=100_000, state_dim=16, num_agents=3, seed=0)
buffer.add(transition)                 # a runner.Transition with a leading [E] axis
batch = buffer.sample(256)             # Batch of torch tensors, batch.state [256, 16]
```
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

from spnpolicy.training.next_values import NextValues

__all__ = ["Batch", "ReplayBuffer"]


class Batch(NamedTuple):
    """Sampled transitions as torch tensors, ``B`` rows; ``obs`` fields are None unless stored."""

    state: torch.Tensor        #: [B, state_dim] float32
    actions: torch.Tensor      #: [B, n] int64 joint action
    reward: torch.Tensor       #: [B] float32 team reward
    next_state: torch.Tensor   #: [B, state_dim] float32 (final state of an ended episode)
    terminated: torch.Tensor   #: [B] float32, 1.0 where the episode terminated (no bootstrap)
    steps: torch.Tensor        #: [B] int64 steps from state to next_state (n-step returns)
    obs: torch.Tensor | None = None       #: [B, n, obs_dim] float32
    next_obs: torch.Tensor | None = None  #: [B, n, obs_dim] float32


#: the smallest row (bytes) whose next values are kept by reference to later rows
SHARED_BYTES = 1024


def _check_positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


class ReplayBuffer:
    """Fixed-capacity FIFO storage with uniform sampling (with replacement).

    Args:
        capacity: number of transitions kept; the oldest are overwritten first.
        state_dim: global state size.
        num_agents: ``n``.
        obs_dim: per-agent observation size; ``None`` stores no observations.
        seed: seed of the buffer's own sampling generator (checkpointed with it).
        device: where sampled tensors are put.
        shared_bytes: the smallest row, in bytes, of a state or observations whose next
            values are kept by reference to later rows (below it, the bookkeeping costs
            more than the copy it saves; 0 shares every one).
    """

    def __init__(self, capacity: int, state_dim: int, num_agents: int,
                 obs_dim: int | None = None, seed: int | None = None,
                 device: str | torch.device = "cpu", shared_bytes: int = SHARED_BYTES) -> None:
        self.capacity = _check_positive("capacity", capacity)
        state_dim = _check_positive("state_dim", state_dim)
        num_agents = _check_positive("num_agents", num_agents)
        self.device = torch.device(device)
        self.rng = np.random.default_rng(seed)
        shapes = {"state": ((state_dim,), np.float32), "actions": ((num_agents,), np.int64),
                  "reward": ((), np.float32), "terminated": ((), np.float32),
                  "steps": ((), np.int64)}
        if obs_dim is not None:
            shapes["obs"] = ((num_agents, _check_positive("obs_dim", obs_dim)), np.float32)
        self.data = {name: np.zeros((self.capacity, *shape), dtype=dtype)
                     for name, (shape, dtype) in shapes.items()}
        # next_state, next_obs: by reference to a later row's state, obs where equal (rows
        # of at least shared_bytes), else stored as they come
        self.next = {f"next_{name}": NextValues(self.capacity, shapes[name][0], np.float32)
                     for name in ("state", "obs") if name in shapes and
                     4 * int(np.prod(shapes[name][0])) >= shared_bytes}
        for name in ("state", "obs"):
            if name in shapes and f"next_{name}" not in self.next:
                self.data[f"next_{name}"] = np.zeros_like(self.data[name])
        self.pos = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, transition: Any) -> None:
        """Append ``E`` transitions: any object with the :class:`Batch` field names as numpy
        arrays with a leading ``[E]`` axis (a ``runner.Transition``, or an
        ``NStepTransition``; ``steps`` defaults to 1)."""
        rows = np.asarray(transition.state).shape[0]
        values = {}
        for name, shape in self._shapes().items():
            value = getattr(transition, name, None)
            value = np.ones(rows, np.int64) if value is None and name == "steps" else value
            if value is None:
                raise ValueError(f"transition.{name} is None: this buffer stores it (a runner "
                                 f"made with observations=False passes no observations)")
            value = values[name] = np.asarray(value)
            if value.shape != (rows, *shape):
                raise ValueError(f"transition.{name} must have shape "
                                 f"{[rows, *shape]}, got {list(value.shape)}")
        if rows == 0:
            return
        kept = min(rows, self.capacity)   # more rows than capacity: the last ones remain
        index = (self.pos + rows - kept + np.arange(kept)) % self.capacity
        for nxt in self.next.values():            # rows about to be overwritten
            nxt.release(index)
        for name, store in self.data.items():
            store[index] = values[name][rows - kept:]
        for name, nxt in self.next.items():
            nxt.store(index, values[name][rows - kept:], self.data[name[5:]])
        self.pos = int((self.pos + rows) % self.capacity)
        self.size = min(self.size + rows, self.capacity)

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        """Each field's shape after the leading row axis: the stored columns, then the
        next values kept by reference."""
        shapes = {name: store.shape[1:] for name, store in self.data.items()}
        return shapes | {name: nxt.shape for name, nxt in self.next.items()}

    def sample(self, batch_size: int) -> Batch:
        """``batch_size`` transitions drawn uniformly with replacement."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        index = self.rng.integers(0, self.size, size=_check_positive("batch_size", batch_size))
        arrays = {name: store[index] for name, store in self.data.items()}
        arrays |= {name: nxt.gather(index, self.data[name[5:]])
                   for name, nxt in self.next.items()}
        return Batch(**{name: torch.as_tensor(value, device=self.device)
                        for name, value in arrays.items()})

    def state_dict(self) -> dict[str, Any]:
        """Stored rows (as tensors), position and generator state: loadable with
        ``torch.load(weights_only=True)``. Next values are each row's reference (-1: none)
        and the values kept without one (``"next"``)."""
        return {"data": {name: torch.from_numpy(store[:self.size].copy())
                         for name, store in self.data.items()},
                "next": {name: {key: torch.from_numpy(value) for key, value in
                                nxt.state_dict(self.size).items()}
                         for name, nxt in self.next.items()},
                "pos": self.pos, "size": self.size, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`, or a checkpoint written before next values were kept
        by reference (its ``next_state`` / ``next_obs`` rows in ``"data"``)."""
        fields = set(state["data"]) | set(state.get("next", {}))
        if fields != set(self._shapes()):
            raise ValueError(f"buffer fields differ: checkpoint has {sorted(fields)}, "
                             f"this buffer {sorted(self._shapes())}")
        size = int(state["size"])
        if size > self.capacity:
            raise ValueError(f"checkpoint holds {size} transitions, more than capacity "
                             f"{self.capacity}")
        saved_next = state.get("next", {})
        for name, store in self.data.items():
            if name in state["data"]:
                store[:size] = state["data"][name].numpy()
            else:                           # shared there, plain here: its values
                store[:size] = _next_values(saved_next[name], state["data"][name[5:]], size)
        for name, nxt in self.next.items():
            if name in saved_next:
                nxt.load_state_dict({key: value.numpy() for key, value in
                                     saved_next[name].items()}, size)
            else:                           # plain there (or an earlier checkpoint)
                nxt.load_values(state["data"][name].numpy())
        self.pos, self.size = int(state["pos"]), size
        self.rng.bit_generator.state = state["rng"]


def _next_values(saved: dict[str, torch.Tensor], current: torch.Tensor, size: int) -> np.ndarray:
    """Plain next values ``[size, ...]`` of a checkpoint's shared column ``saved``."""
    values = current.numpy()
    column = NextValues(max(size, 1), values.shape[1:], values.dtype)
    column.load_state_dict({key: value.numpy() for key, value in saved.items()}, size)
    return column.gather(np.arange(size), values)
