"""n-step transitions: ``(s_t, u_t, sum_{i<m} gamma^i r_{t+i}, s_{t+m}, terminated, m)``.

Sparse rewards travel ``n`` steps back per Bellman backup instead of one. The horizon
``m`` is ``n``, or less when the episode ended first; the target is then
``R + gamma^m (1 - terminated) V(s_{t+m})``. Transitions go in one step of all copies at a
time and come out when they are ``n`` steps old or their episode has ended.

```python
nstep = NStepAccumulator(num_envs=8, n=5, gamma=0.99)
buffer.add(nstep.push(runner.step(actions)))      # ReplayBuffer stores `steps` too
```

Fields that are ``None`` (the observations of a ``Runner(envs, observations=False)``) are
neither kept nor copied: they come out ``None``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from spnpolicy.training.runner import Transition

__all__ = ["NStepAccumulator", "NStepTransition"]


class NStepTransition(NamedTuple):
    """Like :class:`~spnpolicy.training.runner.Transition` (leading ``[M]`` axis, ``M`` may
    be 0) with ``reward`` the discounted ``m``-step return and ``steps`` the horizon ``m``;
    ``obs`` and ``next_obs`` are None where the transitions had none."""

    state: np.ndarray
    obs: np.ndarray | None
    actions: np.ndarray
    reward: np.ndarray
    next_state: np.ndarray
    next_obs: np.ndarray | None
    terminated: np.ndarray
    steps: np.ndarray


class NStepAccumulator:
    """The last ``n`` one-step transitions of every copy, in ring arrays ``[n, E, ...]``.

    All copies step together, so step ``t`` of every copy sits in slot ``t % n``; copy
    ``e``'s queue is its last ``length[e]`` steps. ``push`` works on whole arrays: its cost
    does not grow with a Python loop over the copies. A field that comes as ``None`` has no
    ring (``None`` in :attr:`ring`) and goes out as ``None``.
    """

    def __init__(self, num_envs: int, n: int, gamma: float) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        self.n, self.num_envs = n, num_envs
        self.discounts = np.array([gamma**i for i in range(n)], np.float32)   # [n]
        self.length = np.zeros(num_envs, np.int64)    # queued steps per copy
        self.t = -1                                    # the last step's time (its slot: t % n)
        self.ring: list[np.ndarray | None] | None = None  # the 7 fields, [n, E, ...] each

    def push(self, transition: Transition) -> NStepTransition:
        """Add one step of every copy; returns the transitions that are complete: per copy
        in order, the ones starting at its oldest queued step first."""
        if len(transition.reward) != self.num_envs:
            raise ValueError(f"the transition has {len(transition.reward)} copies' steps, this "
                             f"accumulator was made for num_envs={self.num_envs}")
        fields = tuple(transition[:7])
        if self.ring is None:
            self._allocate(tuple(None if field is None else field[0] for field in fields))
        self.t += 1
        for i, (ring, field) in enumerate(zip(self.ring, fields)):
            if field is None:        # not kept (a resumed queue's values of it are dropped)
                self.ring[i] = None
            elif ring is None:
                raise ValueError(f"transition field {i} ({NStepTransition._fields[i]}) is "
                                 f"given, but this accumulator's queued steps have none")
            else:
                ring[self.t % self.n] = field
        self.length += 1
        ended = (transition.terminated > 0) | transition.truncated
        count = np.where(ended, self.length, self.length == self.n)
        env = np.repeat(np.arange(self.num_envs), count)
        offset = np.arange(env.size) - np.repeat(np.cumsum(count) - count, count)
        steps = self.length[env] - offset                      # the horizon m of each row
        first = (self.t - steps + 1) % self.n                   # the slot it starts at
        self.length[ended] = 0
        self.length[~ended & (self.length == self.n)] -= 1
        ages = np.arange(self.n)
        rewards = self.ring[3][(first[:, None] + ages) % self.n, env[:, None]]     # [M, n]
        terms = np.where(ages < steps[:, None], self.discounts * rewards, np.float32(0))
        ret = terms[:, 0].copy()
        for i in range(1, self.n):             # float32, in order: as summing step by step
            ret += terms[:, i]
        start = (None if ring is None else ring[first, env] for ring in self.ring[:3])
        end = (None if field is None else field[env] for field in fields[4:7])
        return NStepTransition(*start, ret.astype(np.float32, copy=False), *end, steps)

    def _allocate(self, step: tuple) -> None:
        """Empty ring arrays ``[n, E, ...]`` for steps shaped like one copy's ``step`` (none
        for its ``None`` fields)."""
        self.ring = [None if f is None else
                     np.zeros((self.n, self.num_envs, *np.shape(f)), np.asarray(f).dtype)
                     for f in step]

    def _queue(self, e: int) -> list[tuple[np.ndarray, ...]]:
        """Copy ``e``'s queued steps, oldest first, as tuples of the 7 fields."""
        slots = [(self.t - j) % self.n for j in range(int(self.length[e]) - 1, -1, -1)]
        return [tuple(None if ring is None else ring[s, e] for ring in self.ring)
                for s in slots]

    def state_dict(self) -> dict[str, Any]:
        queues = [self._queue(e) if self.ring is not None else [] for e in range(self.num_envs)]
        return {"queues": [[[None if x is None else np.asarray(x).tolist() for x in step]
                            for step in queue] for queue in queues]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        queues = [[tuple(None if x is None else np.asarray(x, dtype=d)
                         for x, d in zip(step, _DTYPES)) for step in queue]
                  for queue in state["queues"]]
        if len(queues) != self.num_envs:
            raise ValueError(f"the n-step state has {len(queues)} copies' queues, this "
                             f"accumulator {self.num_envs} copies")
        self.length = np.array([len(q) for q in queues], np.int64)
        self.t, self.ring = self.n - 1, None
        shaped = next((q[0] for q in queues if q), None)
        if shaped is None:
            return
        self._allocate(shaped)
        for e, queue in enumerate(queues):
            for j, step in enumerate(queue):            # oldest first, ending at slot t
                for ring, value in zip(self.ring, step):
                    if ring is not None:
                        ring[(self.t - len(queue) + 1 + j) % self.n, e] = value


_DTYPES = (np.float32, np.float32, np.int64, np.float32, np.float32, np.float32, np.float32)
