"""What a training loop stores per env step: n-step transitions and hindsight copies, with
shaping of their rewards with the env's potential when asked (``shaping``, see
:mod:`~spnpolicy.training.shaping`).

```python
stream = TransitionStream(envs, n_step=5, gamma=0.99, hindsight=True, seed=0, shaping=True)
buffer.add(stream.push(runner.step(actions)))     # checkpoint stream.state_dict() too
```
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spnpolicy.training.hindsight import Hindsight
from spnpolicy.training.nstep import NStepAccumulator, NStepTransition
from spnpolicy.training.runner import Transition
from spnpolicy.training.shaping import PotentialShaping

__all__ = ["TransitionStream"]


class TransitionStream:
    """An :class:`NStepAccumulator` and, when ``hindsight``, a :class:`Hindsight` fed the
    same steps; ``push`` returns the n-step rows followed by the relabelled ones, both
    shaped by :class:`PotentialShaping` when ``shaping`` (ValueError naming ``shaping`` for
    an env without a potential)."""

    def __init__(self, envs: Any, n_step: int, gamma: float, hindsight: bool = False,
                 seed: int | None = None, shaping: bool = False,
                 shaping_form: str = "potential") -> None:
        self.nstep = NStepAccumulator(envs.num_envs, n_step, gamma)
        self.hindsight = Hindsight(envs, seed=seed) if hindsight else None
        self.shaping = PotentialShaping(envs, gamma, shaping_form) if shaping else None

    def push(self, transition: Transition) -> NStepTransition:
        """One step of every copy -> the rows to store (``[M]``, ``M`` may be 0)."""
        rows = self.nstep.push(transition)
        if self.hindsight is not None:
            relabelled = self.hindsight.push(transition)
            if transition.obs is None:   # no observations kept (the runner passes None)
                relabelled = relabelled._replace(obs=None, next_obs=None)
            rows = NStepTransition(*(None if pair[0] is None else np.concatenate(pair)
                                     for pair in zip(rows, relabelled)))
        return rows if self.shaping is None else self.shaping(rows)

    def state_dict(self) -> dict[str, Any]:
        return {"nstep": self.nstep.state_dict(),
                "hindsight": self.hindsight.state_dict() if self.hindsight is not None else {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.nstep.load_state_dict(state["nstep"])
        if self.hindsight is not None:
            self.hindsight.load_state_dict(state["hindsight"])
