"""Reward shaping with the environment's potential ``Phi`` (coverage: minus the agents'
summed distance to their goals under the best assignment, over the grid size).

Two forms (``shaping_form``); evaluation always keeps the env's own reward.

- ``potential`` (Ng, Harada and Russell 1999): learn from ``r + gamma Phi(s') - Phi(s)``
  with the algorithm's own ``gamma`` and ``Phi(s') = 0`` when ``s'`` is terminal. The shaped
  returns differ from the true ones by ``-Phi(s_0)`` only, so the task's optimal policies
  are unchanged. For the same reason the shaping's signal is transient: the shaped values
  converge to ``Q(s, u) - Phi(s)``, whose differences between actions are the true ones, so
  on a task whose reward is never reached (coverage with 6 agents on 20x20) they carry no
  preference once learned, and value errors that grow with ``|Phi|`` then favour states
  far from the goals.
- ``progress``: learn from ``r + Phi(s') - Phi(s)`` (``(1 - terminated) Phi(s')`` as
  above), the undiscounted progress. Its discounted sum is ``-Phi(s_0) + (1 - gamma)
  sum_t gamma^(t-1) Phi(s_t)``: it keeps paying for being near the goals, and for getting
  there sooner, at every step, so its signal does not fade. It changes the objective
  (where the env's reward is reachable both still favour reaching it: coverage's potential
  is largest, 0, exactly at success, which ends the episode). One-step rows only.

Shaping an ``m``-step row of the ``potential`` form telescopes, so it is applied to whole
rows after the n-step accumulator (and to hindsight rows, whose relabelled goals give a new
potential):

    sum_{i<m} gamma^i (r_i + gamma Phi(s_{i+1}) - Phi(s_i))
        = R + gamma^m (1 - terminated) Phi(s_m) - Phi(s_0)

```python
shape = PotentialShaping(envs, gamma=0.99)   # ValueError naming `shaping` without a potential
rows = shape(nstep.push(transition))
progress = PotentialShaping(envs, gamma=0.9, form="progress")
```
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spnpolicy.training.nstep import NStepTransition

__all__ = ["SHAPING_FORMS", "PotentialShaping"]

#: The forms of shaping (the configs' ``shaping_form``), see the module docstring.
SHAPING_FORMS = ("potential", "progress")


class PotentialShaping:
    """Adds ``gamma^m (1 - terminated) Phi(s_m) - Phi(s_0)`` (form ``potential``) or
    ``(1 - terminated) Phi(s_1) - Phi(s_0)`` (form ``progress``, one-step rows) to the
    reward of every row.

    Args:
        envs: the vectorised env; it must have ``potential(states [M, S]) -> [M]`` (the
            coverage env: ``infos["potential"]`` as a function of the global state).
        gamma: the algorithm's discount factor.
        form: ``"potential"`` or ``"progress"`` (see the module docstring).
    """

    def __init__(self, envs: Any, gamma: float, form: str = "potential") -> None:
        potential = getattr(envs, "potential", None)
        if not callable(potential):
            raise ValueError(f"shaping=True needs an env with a potential: the coverage env, "
                             f"or one with a method state_potential(state) -> float of its "
                             f"global state; {type(envs).__name__} has none: use "
                             f"shaping=False")
        if form not in SHAPING_FORMS:
            raise ValueError(f"shaping_form must be one of {SHAPING_FORMS}, got {form!r}")
        self.potential, self.gamma, self.form = potential, gamma, form

    def __call__(self, rows: NStepTransition) -> NStepTransition:
        """The rows ``[M]`` with shaped rewards (float32); other fields unchanged."""
        if len(rows.reward) == 0:
            return rows
        start = np.asarray(self.potential(rows.state), dtype=np.float64)
        end = np.asarray(self.potential(rows.next_state), dtype=np.float64)
        if self.form == "progress" and (rows.steps != 1).any():
            raise ValueError(f"shaping_form='progress' shapes one-step rows only (n_step=1), "
                             f"got rows of {int(rows.steps.max())} steps")
        discount = (self.gamma ** rows.steps.astype(np.float64) if self.form == "potential"
                    else 1.0)
        reward = rows.reward + discount * (1.0 - rows.terminated) * end - start
        return rows._replace(reward=reward.astype(np.float32))
