"""A uniform replay buffer of multi-agent transitions, sampled as :class:`Batch` tuples.

Stores global states (for centralised critics and policies) and, when ``obs_dim`` is
given, per-agent observations (for decentralised agents), in preallocated numpy arrays.

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
    """

    def __init__(self, capacity: int, state_dim: int, num_agents: int,
                 obs_dim: int | None = None, seed: int | None = None,
                 device: str | torch.device = "cpu") -> None:
        self.capacity = _check_positive("capacity", capacity)
        state_dim = _check_positive("state_dim", state_dim)
        num_agents = _check_positive("num_agents", num_agents)
        self.device = torch.device(device)
        self.rng = np.random.default_rng(seed)
        shapes = {"state": ((state_dim,), np.float32), "next_state": ((state_dim,), np.float32),
                  "actions": ((num_agents,), np.int64), "reward": ((), np.float32),
                  "terminated": ((), np.float32), "steps": ((), np.int64)}
        if obs_dim is not None:
            obs_shape = (num_agents, _check_positive("obs_dim", obs_dim))
            shapes |= {"obs": (obs_shape, np.float32), "next_obs": (obs_shape, np.float32)}
        self.data = {name: np.zeros((self.capacity, *shape), dtype=dtype)
                     for name, (shape, dtype) in shapes.items()}
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
        for name, store in self.data.items():
            value = getattr(transition, name, None)
            value = np.ones(rows, np.int64) if value is None and name == "steps" else value
            value = values[name] = np.asarray(value)
            if value.shape != (rows, *store.shape[1:]):
                raise ValueError(f"transition.{name} must have shape "
                                 f"{[rows, *store.shape[1:]]}, got {list(value.shape)}")
        if rows == 0:
            return
        index = (self.pos + np.arange(rows)) % self.capacity
        for name, store in self.data.items():
            store[index] = values[name]
        self.pos = int((self.pos + rows) % self.capacity)
        self.size = min(self.size + rows, self.capacity)

    def sample(self, batch_size: int) -> Batch:
        """``batch_size`` transitions drawn uniformly with replacement."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        index = self.rng.integers(0, self.size, size=_check_positive("batch_size", batch_size))
        tensors = {name: torch.as_tensor(store[index], device=self.device)
                   for name, store in self.data.items()}
        return Batch(**tensors)

    def state_dict(self) -> dict[str, Any]:
        """Stored rows (as tensors), position and generator state: loadable with
        ``torch.load(weights_only=True)``."""
        return {"data": {name: torch.from_numpy(store[:self.size].copy())
                         for name, store in self.data.items()},
                "pos": self.pos, "size": self.size, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state["data"]) != set(self.data):
            raise ValueError(f"buffer fields differ: checkpoint has {sorted(state['data'])}, "
                             f"this buffer {sorted(self.data)}")
        size = int(state["size"])
        if size > self.capacity:
            raise ValueError(f"checkpoint holds {size} transitions, more than capacity "
                             f"{self.capacity}")
        for name, store in self.data.items():
            store[:size] = state["data"][name].numpy()
        self.pos, self.size = int(state["pos"]), size
        self.rng.bit_generator.state = state["rng"]
