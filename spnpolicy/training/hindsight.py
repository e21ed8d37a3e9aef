"""Hindsight goal relabelling (Andrychowicz et al. 2017, HER's ``future`` strategy).

In a sparse goal-reaching task a random policy rarely sees a reward. When an episode ends,
every one of its transitions is stored a second time with the goals moved to where the
agents were at a random later step of the same episode: the relabelled copy reaches its
goals, so the critic sees rewards from the first episodes on. The environment says how to
move goals (``envs.relabel_goals``, coverage only); the copies are one-step transitions.

```python
hindsight = Hindsight(envs, seed=0)
buffer.add(hindsight.push(runner.step(actions)))  # relabelled copies of the ended episodes
```

The training loops use it through :class:`~spnpolicy.training.TransitionStream` (``hindsight``
config field), next to their n-step transitions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spnpolicy.training.nstep import NStepTransition
from spnpolicy.training.runner import Transition

__all__ = ["Hindsight"]

# the per-step fields an episode keeps (observations are rebuilt from relabelled states)
_FIELDS = ("state", "actions", "next_state")


class Hindsight:
    """Per-copy episode memories that turn into relabelled transitions when episodes end.

    Args:
        envs: the vectorised env; it must have ``relabel_goals(states, goal_states, rng)``
            (see :meth:`~spnpolicy.training.vec_env.CoverageVec.relabel_goals`); every
            reward of the coverage env works (``sparse`` is the one HER is for).
        seed: seed of the generator choosing the future steps and goal orders.
    """

    def __init__(self, envs: Any, seed: int | None = None) -> None:
        if not callable(getattr(envs, "relabel_goals", None)):
            raise ValueError(f"hindsight relabelling needs an env with goals to move (coverage); "
                             f"{type(envs).__name__} has no relabel_goals")
        self.envs = envs
        self.rng = np.random.default_rng(seed)
        self.episodes: list[list[tuple[np.ndarray, ...]]] = [[] for _ in range(envs.num_envs)]

    def push(self, transition: Transition) -> NStepTransition:
        """Add one step of every copy; returns the relabelled transitions (``[M]`` rows, one
        step each) of the copies whose episode ended at this step."""
        ended = (transition.terminated > 0) | transition.truncated
        out = []
        for e, episode in enumerate(self.episodes):
            episode.append(tuple(getattr(transition, name)[e] for name in _FIELDS))
            if ended[e]:
                out.append(self._relabel(episode))
                self.episodes[e] = []
        if not out:
            return self._empty()
        return NStepTransition(*(np.concatenate(column) for column in zip(*out)))

    def _empty(self) -> NStepTransition:
        n, s, o = self.envs.num_agents, self.envs.state_dim, self.envs.obs_dim
        states, obs = np.zeros((0, s), np.float32), np.zeros((0, n, o), np.float32)
        rows = np.zeros(0, np.float32)
        return NStepTransition(states, obs, np.zeros((0, n), np.int64), rows, states, obs, rows,
                               np.zeros(0, np.int64))

    def _relabel(self, episode: list[tuple[np.ndarray, ...]]) -> NStepTransition:
        """Step ``t`` of ``episode`` with the goals of the state reached after a uniform
        step ``t' >= t``, its reward and termination recomputed by the env; rows whose
        relabelled start would already have ended the episode, or whose goal cells are not
        distinct, are dropped."""
        length = len(episode)
        state, actions, next_state = (np.stack(column) for column in zip(*episode))
        future = self.rng.integers(np.arange(length), length)          # t' in [t, T - 1]
        goal_states = next_state[future]
        # one goal order per row, used for both ends of the transition
        seed = self.rng.integers(2**63)
        start, start_obs, _, start_done, valid = self.envs.relabel_goals(
            state, goal_states, np.random.default_rng(seed))
        end, end_obs, reward, terminated, _ = self.envs.relabel_goals(
            next_state, goal_states, np.random.default_rng(seed))
        keep = valid & ~start_done
        return NStepTransition(start[keep], start_obs[keep], actions[keep],
                               reward[keep].astype(np.float32), end[keep], end_obs[keep],
                               terminated[keep].astype(np.float32),
                               np.ones(int(keep.sum()), np.int64))

    def state_dict(self) -> dict[str, Any]:
        return {"episodes": [[[np.asarray(x).tolist() for x in step] for step in episode]
                             for episode in self.episodes],
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        dtypes = (np.float32, np.int64, np.float32)
        self.episodes = [[tuple(np.asarray(x, dtype=d) for x, d in zip(step, dtypes))
                          for step in episode] for episode in state["episodes"]]
        self.rng.bit_generator.state = state["rng"]
