"""Bookkeeping shared by the batched numpy envs (`CoverageVecEnv`, `PredatorPreyVecEnv`,
`LiftVecEnv`): each of the `E` copies draws only from its own generator, so that copy e of
an env made with `seed=s` replays the one-copy ParallelEnv reset with `reset(seed=s + e)`.
`BatchedEnv` is the base of the envs that cache their global states: it owns `reset` and
`step` (action checks, truncation, auto-reset), and a subclass supplies the rules.

```python
rngs = copy_generators(4, seed=0)          # copy e: numpy.random.default_rng(0 + e)
saved = generator_states(rngs)             # JSON-friendly, for a snapshot
rngs = restore_generators(saved)           # continue exactly where `saved` was taken
```
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

import numpy as np

from spnpolicy.envs.validation import check_int, check_joint_actions


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


class BatchedEnv(ABC):
    """Base of `CoverageVecEnv` and `PredatorPreyVecEnv`: `num_envs` copies of the env that
    `config` describes (its `num_agents`, `obs_dim`, `state_dim` and `max_steps`), copy e
    drawing only from `_rngs[e]`, `elapsed [E]` int64 steps since each copy's last reset, and
    the global states `[E, state_dim]` cached in `_state` (None before the first reset).

    The base runs `reset` and `step` (action checks, truncation, auto-reset); a subclass
    checks `num_envs` and makes `config` before calling `__init__`, which checks `seed` (as
    in :func:`copy_generators`), and writes the rules: `_draw_layouts`, `_advance` and
    `_observe`.
    """

    def __init__(self, num_envs: int, config: Any, num_actions: int, seed: int | None) -> None:
        self.num_envs, self.config = num_envs, config
        self.num_agents, self.num_actions = config.num_agents, num_actions
        self.obs_dim, self.state_dim = config.obs_dim, config.state_dim
        self._rngs = copy_generators(num_envs, seed)
        self.elapsed = np.zeros(num_envs, dtype=np.int64)
        self._state: np.ndarray | None = None

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start a new episode in every copy; returns observations `[E, n, obs_dim]`.

        With `seed`, copy e's generator restarts from `seed + e`; without, generators go on.
        """
        if seed is not None:
            self._rngs = copy_generators(self.num_envs, seed)
        self._draw_layouts(np.arange(self.num_envs))
        self.elapsed[:] = 0
        self._state, obs = self._observe(slice(None))
        return obs

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                 np.ndarray, dict[str, np.ndarray]]:
        """Advance every copy by one joint action.

        Args:
            actions: `[E, n]` integers in [0, num_actions).

        Returns:
            obs `[E, n, obs_dim]` float32, reward `[E]` float32, terminated `[E]` bool,
            truncated `[E]` bool (`max_steps` reached without terminating), info with the
            env's own `[E]` entries (its class docstring lists them), `final_observation
            [E, n, obs_dim]` and `final_state [E, state_dim]`, all of the state the step
            reached, before any reset.
        """
        self._require_state()
        actions = check_joint_actions(actions, self.num_envs, self.num_agents, self.num_actions)
        reward, terminated, info = self._advance(actions)
        self.elapsed += 1
        truncated = (self.elapsed >= self.config.max_steps) & ~terminated
        final_state, final_obs = self._observe(slice(None))
        info.update(final_observation=final_obs, final_state=final_state)
        done = np.flatnonzero(terminated | truncated)
        self._state, obs = final_state, final_obs
        if done.size:
            self._draw_layouts(done)
            self.elapsed[done] = 0
            self._state, obs = final_state.copy(), final_obs.copy()
            self._state[done], obs[done] = self._observe(done)
        return obs, reward, terminated, truncated, info

    def state(self) -> np.ndarray:
        """Global states `[E, state_dim]` float32 (a copy)."""
        return self._require_state().copy()

    def _require_state(self) -> np.ndarray:
        if self._state is None:
            raise RuntimeError("call reset() before step() or state()")
        return self._state

    @abstractmethod
    def _draw_layouts(self, copies: np.ndarray) -> None:
        """Start a new episode's layout in the copies `copies [m]` (int64), each drawing from
        its own generator."""

    @abstractmethod
    def _advance(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                     dict[str, np.ndarray]]:
        """Apply the checked joint actions `[E, n]` to every copy (`elapsed` is the base's);
        returns `(reward [E] float32, terminated [E] bool, info)`, info holding the env's own
        `[E]` entries for the step just taken."""

    @abstractmethod
    def _observe(self, copies: slice | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`(global states [m, state_dim] float32, observations [m, n, obs_dim] float32)` of
        the copies `copies` (`slice(None)`: all of them) as they are now."""
