"""Potential-based reward shaping (Ng, Harada and Russell 1999).

With ``shaping=True`` an algorithm learns from ``r + gamma Phi(s') - Phi(s)`` instead of
``r``, with its own ``gamma``, ``Phi`` the environment's potential and ``Phi(s') = 0`` when
``s'`` is terminal. The shaped returns differ from the true ones by ``-Phi(s_0)`` only, so
the optimal policies of the task are unchanged, while a sparse reward gains a dense signal
(coverage: minus the agents' summed distance to their goals under the best assignment).
Evaluation keeps the env's own reward.

Shaping an ``m``-step row telescopes, so it is applied to whole rows after the n-step
accumulator (and to hindsight rows, whose relabelled goals give a new potential):

    sum_{i<m} gamma^i (r_i + gamma Phi(s_{i+1}) - Phi(s_i))
        = R + gamma^m (1 - terminated) Phi(s_m) - Phi(s_0)

```python
shape = PotentialShaping(envs, gamma=0.99)   # ValueError naming `shaping` without a potential
rows = shape(nstep.push(transition))
```
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spnpolicy.training.nstep import NStepTransition

__all__ = ["PotentialShaping"]


class PotentialShaping:
    """Adds ``gamma^m (1 - terminated) Phi(s_m) - Phi(s_0)`` to the reward of every row.

    Args:
        envs: the vectorised env; it must have ``potential(states [M, S]) -> [M]`` (the
            coverage env: ``infos["potential"]`` as a function of the global state).
        gamma: the algorithm's discount factor.
    """

    def __init__(self, envs: Any, gamma: float) -> None:
        potential = getattr(envs, "potential", None)
        if not callable(potential):
            raise ValueError(f"shaping=True needs an env with a potential (the coverage env's "
                             f"infos['potential']); {type(envs).__name__} has none: use "
                             f"shaping=False")
        self.potential, self.gamma = potential, gamma

    def __call__(self, rows: NStepTransition) -> NStepTransition:
        """The rows ``[M]`` with shaped rewards (float32); other fields unchanged."""
        if len(rows.reward) == 0:
            return rows
        start = np.asarray(self.potential(rows.state), dtype=np.float64)
        end = np.asarray(self.potential(rows.next_state), dtype=np.float64)
        discount = self.gamma ** rows.steps.astype(np.float64)
        reward = rows.reward + discount * (1.0 - rows.terminated) * end - start
        return rows._replace(reward=reward.astype(np.float32))
