"""Collects transitions from a :class:`~spnpolicy.training.vec_env.VecEnv`, one step of all
copies at a time, and keeps episode statistics.

```python
runner = Runner(envs)
runner.reset(seed=0)
actions = agent.act(runner.state, deterministic=False)   # centralised: global state [E, S]
transition = runner.step(actions)                        # or per-agent: runner.obs [E, n, D]
buffer.add(transition)
for episode in runner.pop_episodes(): ...
```

An algorithm that reads global states only (``needs_obs = False``) runs with
``Runner(envs, observations=False)`` (or ``runner.observations = False``): its transitions
and ``runner.obs`` are then ``None`` instead of per-agent observations, so that nothing
downstream (n-step accumulator, replay buffer) copies them. The env still builds them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from spnpolicy.training.vec_env import VecEnv

__all__ = ["Episode", "Runner", "Transition"]


class Transition(NamedTuple):
    """The step every copy just took; arrays with a leading ``[E]`` axis."""

    state: np.ndarray       #: [E, state_dim] state the actions were taken in
    obs: np.ndarray | None  #: [E, n, obs_dim] observations the actions were taken on
    actions: np.ndarray     #: [E, n] int64 executed (VecStep.executed where the env overrode)
    reward: np.ndarray      #: [E] float32 team reward
    next_state: np.ndarray  #: [E, state_dim] state reached (the final one if the episode ended)
    next_obs: np.ndarray | None  #: [E, n, obs_dim] (None: the runner keeps no observations)
    terminated: np.ndarray  #: [E] float32 1.0 where the episode terminated
    truncated: np.ndarray   #: [E] bool, the episode was cut by a time limit


class Episode(NamedTuple):
    """A finished episode of one copy."""

    env_index: int
    ret: float      # sum of team rewards
    length: int
    success: bool   # the env's success flag on the last step (False if it has none)


class Runner:
    """Steps ``envs`` with given joint actions, tracking the current states and episodes.

    ``observations``: pass the per-agent observations on (in :attr:`obs` and in the
    transitions); ``False`` passes ``None`` instead (settable later, e.g. once the
    algorithm that says whether it reads them is built).
    """

    def __init__(self, envs: VecEnv, observations: bool = True) -> None:
        self.envs = envs
        self.state: np.ndarray | None = None  # [E, state_dim] current states
        self.obs: np.ndarray | None = None    # [E, n, obs_dim] current observations
        self._observations = bool(observations)
        self._returns = np.zeros(envs.num_envs, dtype=np.float64)
        self._lengths = np.zeros(envs.num_envs, dtype=np.int64)
        self._finished: list[Episode] = []
        self._untracked = np.zeros(envs.num_envs, dtype=bool)  # copies set by branch()
        self.env_steps = 0  # transitions collected, summed over copies

    @property
    def observations(self) -> bool:
        """Whether the per-agent observations are passed on (else ``None``)."""
        return self._observations

    @observations.setter
    def observations(self, keep: bool) -> None:
        self._observations = bool(keep)
        if not keep:
            self.obs = None

    @property
    def elapsed(self) -> np.ndarray:
        """``[E]`` int64: each copy's steps since its episode began (0 right after a reset)."""
        return self._lengths.copy()

    def _kept(self, obs: np.ndarray) -> np.ndarray | None:
        return obs if self._observations else None

    def reset(self, seed: int | None = None) -> None:
        self.state, obs = self.envs.reset(seed=seed)
        self.obs = self._kept(obs)
        self._returns[:] = 0
        self._lengths[:] = 0

    def branch(self, source: np.ndarray, target: np.ndarray) -> None:
        """Set the copies ``target [m]`` to the current states of the copies ``source [m]``
        (the env's :meth:`~spnpolicy.training.vec_env.VecEnv.copy_copies`), with their
        observations and episode counters; from then on the target copies' episodes are
        not reported (each is a sequence of one-step branches, not an episode)."""
        if self.state is None:
            raise RuntimeError("call reset() before branch()")
        self.envs.copy_copies(source, target)
        # new arrays: the last transition's next states may be these ones
        self.state = self.state.copy()
        self.state[target] = self.state[source]
        if self.obs is not None:
            self.obs = self.obs.copy()
            self.obs[target] = self.obs[source]
        self._returns[target] = self._returns[source]
        self._lengths[target] = self._lengths[source]
        self._untracked[target] = True

    def step(self, actions: np.ndarray) -> Transition:
        """Take joint actions ``[E, n]`` in every copy; returns the transitions."""
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions, dtype=np.int64)
        out = self.envs.step(actions)
        # what was done is what the buffer learns from: an env may override an action
        if out.executed is not None:
            actions = np.asarray(out.executed, dtype=np.int64)
        transition = Transition(self.state, self.obs, actions, out.reward, out.final_state,
                                self._kept(out.final_obs), out.terminated.astype(np.float32),
                                out.truncated)
        self._returns += out.reward
        self._lengths += 1
        for e in np.flatnonzero((out.terminated | out.truncated) & ~self._untracked).tolist():
            self._finished.append(Episode(e, float(self._returns[e]), int(self._lengths[e]),
                                          bool(out.success[e])))
            self._returns[e], self._lengths[e] = 0.0, 0
        self.state, self.obs = out.state, self._kept(out.obs)
        self.env_steps += self.envs.num_envs
        return transition

    def pop_episodes(self) -> list[Episode]:
        """Episodes finished since the last call, in the order they ended."""
        finished, self._finished = self._finished, []
        return finished

    def state_dict(self) -> dict[str, Any]:
        return {"env": self.envs.state_dict(), "returns": self._returns.tolist(),
                "lengths": self._lengths.tolist(), "env_steps": self.env_steps,
                "finished": [list(ep) for ep in self._finished]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the envs and the episodes in flight (as saved by :meth:`state_dict`)."""
        self.state, obs = self.envs.load_state_dict(state["env"])
        self.obs = self._kept(obs)
        self._returns[:] = state["returns"]
        self._lengths[:] = state["lengths"]
        self.env_steps = int(state["env_steps"])
        self._finished = [Episode(*ep) for ep in state["finished"]]
