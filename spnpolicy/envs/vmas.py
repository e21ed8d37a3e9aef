"""VMAS tasks (`vmas/<task>`): cooperative scenarios of the Vectorized Multi-Agent
Simulator (Bettini et al. 2022) with discrete moves, a team size of your choice, a global
state and a success flag.

Needs the optional extra: `pip install 'spnpolicy[vmas]'`.

```python
from spnpolicy.envs import vmas
env = vmas.parallel_env("dispersion", n_agents=16)   # = make_env("vmas/dispersion", ...)
observations, infos = env.reset(seed=0)
```

Training steps `E` copies as one VMAS batch (:class:`~spnpolicy.envs.vmas_vec.VmasVecEnv`,
torch on the CPU); this `ParallelEnv` is a one-copy view of the same rules.

| task | the team's goal (success: the scenario's `done()`, which ends the episode) |
|---|---|
| `dispersion` | the agents start together at the centre and must spread out to eat `n_food` foods (default `n_agents`); success: every food eaten |
| `navigation` | each agent must reach its own goal (lidar sees the others); success: every agent on its goal |
| `transport` | the agents must push a package too heavy for one of them (`package_mass` 50) onto a goal; success: the package on the goal |

**Arguments**: `n_agents` (default 4), `max_steps` (default 100: episodes are truncated
there, a time limit that is not in the state), `diagonal_moves` (default False), and the
scenario's own keyword arguments with VMAS's defaults (dispersion: `n_food`,
`share_reward`, `penalise_by_time`, `food_radius`, `pos_range`; navigation: `collisions`,
`agents_with_same_goal`, `shared_rew`, `lidar_range`, `agent_radius`, ...; transport:
`n_packages`, `package_width`, `package_length`, `package_mass`; `TASKS[task].arguments`
lists them).

**Actions** (every agent): 0 noop, 1 left, 2 right, 3 down, 4 up: a force of VMAS's
`u_range` along the axis (VMAS's multi-discrete moves); `diagonal_moves=True` adds 5
left-down, 6 left-up, 7 right-down, 8 right-up.

**Observations**: VMAS's own per-agent vectors (dispersion: position, velocity, then per
food its position relative to the agent and its eaten flag, `4 + 3 n_food` floats;
navigation: position, velocity, position relative to the goal, then with `collisions` the
lidar's `n_lidar_rays` (12) readings; transport: position, velocity, then per package its
position relative to the goal and to the agent, its velocity and its on-goal flag).

**State** (`state()`, `[state_dim]` float32): dispersion: per agent position and velocity,
per food position and eaten flag (`4 n + 3 n_food`); navigation: per agent position,
velocity and goal position (`6 n`); transport: per agent position and velocity, the goal's
position, per package position, velocity and on-goal flag (`4 n + 2 + 5 n_packages`).

**Reward**: each agent gets VMAS's reward; the team reward (`infos[agent]["team_reward"]`,
what training uses) is their **mean**. Where VMAS gives every agent one shared reward
(navigation's default `shared_rew=True`, transport, dispersion with `share_reward=True`)
the mean is that reward, where the sum would count it n times; with individual rewards
(dispersion's default: an eaten food's 1 is split between the agents on it) the mean is
their sum over n, so a dispersion episode's return is the number of foods eaten over n: with
the default `n_food = n_agents`, the fraction of the food eaten, at every team size.
`infos[agent]["success"]` is the step's success.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from spnpolicy.envs.team_env import TeamEnv
from spnpolicy.envs.validation import check_joint_action
from spnpolicy.envs.vmas_tasks import ACTION_NAMES, ACTION_NAMES_DIAGONAL, TASKS
from spnpolicy.envs.vmas_vec import VmasConfig, VmasVecEnv

__all__ = ["TASKS", "VmasConfig", "VmasEnv", "action_names", "parallel_env"]


def action_names(diagonal_moves: bool = False) -> tuple[str, ...]:
    """The names of the actions, in order."""
    return ACTION_NAMES_DIAGONAL if diagonal_moves else ACTION_NAMES


class VmasEnv(TeamEnv):
    """A VMAS task as a PettingZoo ``ParallelEnv`` (a one-copy view of :class:`VmasVecEnv`;
    arguments as in the module docstring)."""

    metadata = {"name": "vmas_v0", "render_modes": [], "is_parallelizable": True}

    def __init__(self, task: str, **kwargs: Any) -> None:
        VmasConfig.from_kwargs(task, kwargs)   # refuses the vec env's own seed and num_envs
        self._vec = VmasVecEnv(1, task, **kwargs)
        self.config: VmasConfig = self._vec.config
        self.metadata = {**self.metadata, "name": f"vmas_{task}_v0"}
        vec = self._vec
        super().__init__(vec.num_agents,
                         lambda: spaces.Box(-np.inf, np.inf, (vec.obs_dim,), np.float32),
                         lambda: spaces.Discrete(vec.num_actions),
                         spaces.Box(-np.inf, np.inf, (vec.state_dim,), np.float32))
        self._reset_pending = False
        self._final_state: np.ndarray | None = None

    def reset(self, seed: int | None = None, options: dict | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        self.agents = self.possible_agents[:]
        if seed is not None or not self._reset_pending:
            self._obs = self._vec.reset(seed)[0]  # else the last step's auto-reset drew it
        self._reset_pending = False
        self._final_state = None
        return self._observe(self._obs), {a: {} for a in self.agents}

    def step(self, actions: dict[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        joint = check_joint_action(actions, self.agents, self._vec.num_actions)
        obs, reward, terminated, truncated, info = self._vec.step(np.array([joint]))
        self._obs = obs[0]
        team, success = float(reward[0]), bool(info["success"][0])
        agents = self.agents
        rewards = {a: float(r) for a, r in zip(agents, info["agent_rewards"][0])}
        infos = {a: {"team_reward": team, "success": success} for a in agents}
        ended = bool(terminated[0] or truncated[0])
        if ended:
            self.agents = []
            self._reset_pending = True
            self._final_state = info["final_state"][0]
        return (self._observe(info["final_observation"][0]), rewards,
                {a: bool(terminated[0]) for a in agents},
                {a: bool(truncated[0]) for a in agents}, infos)

    def state(self) -> np.ndarray:
        if self._final_state is not None:
            return self._final_state.copy()
        return self._vec.state()[0]

    def _observe(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        return {agent: obs[i].copy() for i, agent in enumerate(self.possible_agents)}


def parallel_env(task: str, **kwargs: Any) -> VmasEnv:
    """The VMAS task ``task`` (one of ``TASKS``) as a ``ParallelEnv``; ``kwargs`` as in the
    module docstring. ValueError naming a bad argument; ImportError without vmas."""
    return VmasEnv(task, **kwargs)
