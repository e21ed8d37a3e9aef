"""n-step transitions: ``(s_t, u_t, sum_{i<m} gamma^i r_{t+i}, s_{t+m}, terminated, m)``.

Sparse rewards travel ``n`` steps back per Bellman backup instead of one. The horizon
``m`` is ``n``, or less when the episode ended first; the target is then
``R + gamma^m (1 - terminated) V(s_{t+m})``. Transitions go in one step of all copies at a
time and come out when they are ``n`` steps old or their episode has ended.

```python
nstep = NStepAccumulator(num_envs=8, n=5, gamma=0.99)
buffer.add(nstep.push(runner.step(actions)))      # ReplayBuffer stores `steps` too
```
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from spnpolicy.training.runner import Transition

__all__ = ["NStepAccumulator", "NStepTransition"]


class NStepTransition(NamedTuple):
    """Like :class:`~spnpolicy.training.runner.Transition` (leading ``[M]`` axis, ``M`` may
    be 0) with ``reward`` the discounted ``m``-step return and ``steps`` the horizon ``m``."""

    state: np.ndarray
    obs: np.ndarray
    actions: np.ndarray
    reward: np.ndarray
    next_state: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    steps: np.ndarray


class NStepAccumulator:
    """The last ``n`` one-step transitions of every copy, in ring arrays ``[n, E, ...]``.

    All copies step together, so step ``t`` of every copy sits in slot ``t % n``; copy
    ``e``'s queue is its last ``length[e]`` steps. ``push`` works on whole arrays: its cost
    does not grow with a Python loop over the copies.
    """

    def __init__(self, num_envs: int, n: int, gamma: float) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        self.n, self.num_envs = n, num_envs
        self.discounts = np.array([gamma**i for i in range(n)], np.float32)   # [n]
        self.length = np.zeros(num_envs, np.int64)    # queued steps per copy
        self.t = -1                                    # the last step's time (its slot: t % n)
        self.ring: list[np.ndarray] | None = None      # the 7 fields, [n, E, ...] each

    def push(self, transition: Transition) -> NStepTransition:
        """Add one step of every copy; returns the transitions that are complete: per copy
        in order, the ones starting at its oldest queued step first."""
        if len(transition.reward) != self.num_envs:
            raise ValueError(f"the transition has {len(transition.reward)} copies' steps, this "
                             f"accumulator was made for num_envs={self.num_envs}")
        if self.ring is None:
            self._allocate(tuple(field[0] for field in transition[:7]))
        self.t += 1
        for ring, field in zip(self.ring, transition[:7]):
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
        start = (ring[first, env] for ring in self.ring[:3])
        end = (field[env] for field in transition[4:7])
        return NStepTransition(*start, ret.astype(np.float32, copy=False), *end, steps)

    def _allocate(self, step: tuple) -> None:
        """Empty ring arrays ``[n, E, ...]`` for steps shaped like one copy's ``step``."""
        self.ring = [np.zeros((self.n, self.num_envs, *np.shape(f)), np.asarray(f).dtype)
                     for f in step]

    def _queue(self, e: int) -> list[tuple[np.ndarray, ...]]:
        """Copy ``e``'s queued steps, oldest first, as tuples of the 7 fields."""
        slots = [(self.t - j) % self.n for j in range(int(self.length[e]) - 1, -1, -1)]
        return [tuple(ring[s, e] for ring in self.ring) for s in slots]

    def state_dict(self) -> dict[str, Any]:
        queues = [self._queue(e) if self.ring is not None else [] for e in range(self.num_envs)]
        return {"queues": [[[np.asarray(x).tolist() for x in step] for step in queue]
                           for queue in queues]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        queues = [[tuple(np.asarray(x, dtype=d) for x, d in zip(step, _DTYPES)) for step in queue]
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
                    ring[(self.t - len(queue) + 1 + j) % self.n, e] = value


_DTYPES = (np.float32, np.float32, np.int64, np.float32, np.float32, np.float32, np.float32)
