"""Bookkeeping shared by the batched numpy envs (`CoverageVecEnv`, `PredatorPreyVecEnv`,
`LiftVecEnv`): each of the `E` copies draws only from its own generator, so that copy e of
an env made with `seed=s` replays the one-copy ParallelEnv reset with `reset(seed=s + e)`.
`BatchedEnv` is the base of the envs that cache their global states.

```python
rngs = copy_generators(4, seed=0)          # copy e: numpy.random.default_rng(0 + e)
saved = generator_states(rngs)             # JSON-friendly, for a snapshot
rngs = restore_generators(saved)           # continue exactly where `saved` was taken
```
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from spnpolicy.envs.validation import check_int


def copy_generators(num_envs: int, seed: int | None) -> list[np.random.Generator]:
    """One generator per copy: `numpy.random.default_rng(seed + e)` for copy e, or with
    `seed=None` a generator with fresh OS entropy for every copy.

    Raises ValueError when `seed` is not an integer >= 0.
    """
    if seed is None:
        return [np.random.default_rng() for _ in range(num_envs)]
    seed = check_int("seed", seed, 0)
    return [np.random.default_rng(seed + e) for e in range(num_envs)]


def generator_states(rngs: Iterable[np.random.Generator]) -> list[dict]:
    """Every generator's bit-generator state (plain dicts), in order."""
    return [rng.bit_generator.state for rng in rngs]


def restore_generators(states: Iterable[dict]) -> list[np.random.Generator]:
    """Generators that continue exactly from the `generator_states` given."""
    rngs = []
    for state in states:
        rng = np.random.default_rng()
        rng.bit_generator.state = state
        rngs.append(rng)
    return rngs


class BatchedEnv:
    """Base of `CoverageVecEnv` and `PredatorPreyVecEnv`: `num_envs` copies of the env that
    `config` describes (its `num_agents`, `obs_dim` and `state_dim`), copy e drawing only
    from `_rngs[e]`, and the global states `[E, state_dim]` cached in `_state` by the
    subclass's `reset`, `step` and `restore` (None before the first reset).

    A subclass checks `num_envs` and makes `config` before calling `__init__`, which checks
    `seed` (as in :func:`copy_generators`).
    """

    def __init__(self, num_envs: int, config: Any, num_actions: int, seed: int | None) -> None:
        self.num_envs, self.config = num_envs, config
        self.num_agents, self.num_actions = config.num_agents, num_actions
        self.obs_dim, self.state_dim = config.obs_dim, config.state_dim
        self._rngs = copy_generators(num_envs, seed)
        self._state: np.ndarray | None = None

    def _reseed(self, seed: int | None) -> None:
        """With `seed`, restart copy e's generator from `seed + e`; without, keep them going."""
        if seed is not None:
            self._rngs = copy_generators(self.num_envs, seed)

    def state(self) -> np.ndarray:
        """Global states `[E, state_dim]` float32 (a copy)."""
        return self._require_state().copy()

    def _require_state(self) -> np.ndarray:
        if self._state is None:
            raise RuntimeError("call reset() before step() or state()")
        return self._state
