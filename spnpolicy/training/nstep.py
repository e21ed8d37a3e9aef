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

from collections import deque
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
    """Per-copy queues of the last ``n`` one-step transitions."""

    def __init__(self, num_envs: int, n: int, gamma: float) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        self.n, self.gamma = n, gamma
        self.queues: list[deque] = [deque() for _ in range(num_envs)]

    def _emit(self, queue: deque, last: tuple) -> tuple:
        """The n-step transition starting at the oldest queued step, ending at ``last``."""
        first = queue[0]
        ret = sum(self.gamma**i * step[3] for i, step in enumerate(queue))
        return (first[0], first[1], first[2], np.float32(ret), last[4], last[5], last[6],
                len(queue))

    def push(self, transition: Transition) -> NStepTransition:
        """Add one step of every copy; returns the transitions that are complete."""
        out = []
        ended = (transition.terminated > 0) | transition.truncated
        for e, queue in enumerate(self.queues):
            step = tuple(field[e] for field in transition[:7])
            queue.append(step)
            if ended[e]:
                while queue:
                    out.append(self._emit(queue, step))
                    queue.popleft()
            elif len(queue) == self.n:
                out.append(self._emit(queue, step))
                queue.popleft()
        return self._stack(out, transition)

    @staticmethod
    def _stack(rows: list[tuple], like: Transition) -> NStepTransition:
        if not rows:
            empty = [np.zeros((0, *field.shape[1:]), field.dtype) for field in like[:7]]
            return NStepTransition(*empty, np.zeros(0, np.int64))
        columns = list(zip(*rows))
        return NStepTransition(*(np.stack(c) for c in columns[:7]),
                               np.asarray(columns[7], dtype=np.int64))

    def state_dict(self) -> dict[str, Any]:
        return {"queues": [[[np.asarray(x).tolist() for x in step] for step in queue]
                           for queue in self.queues]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        dtypes = (np.float32, np.float32, np.int64, np.float32, np.float32, np.float32,
                  np.float32)
        self.queues = [deque(tuple(np.asarray(x, dtype=d) for x, d in zip(step, dtypes))
                             for step in queue) for queue in state["queues"]]
