"""Coverage gridworld (Vora, "Centralised Multi-Agent Reinforcement Learning By Leveraging
Tractable Inference", section 6): n agents must cover n goals.

```python
from spnpolicy.envs import coverage_v0
env = coverage_v0.parallel_env(num_agents=6, grid_size=20, max_steps=200, reward="sparse",
                               layout="random", layout_seed=0, observation="absolute")
observations, infos = env.reset(seed=0)
```

| | |
|---|---|
| Agents | `agent_0` ... `agent_{n-1}` |
| Actions | `Discrete(6)`: 0 noop, 1 up (row-1), 2 down (row+1), 3 left (col-1), 4 right, 5 stay |
| Observation | `absolute`: `Box(0, 1, (6n + 1,), float32)`, the global state then one-hot(agent index); `relative`: `Box(-1, 1, (2n^2 + 10n - 1,), float32)`; `egocentric`: `Box(-1, 1, (6n + 1,), float32)`; `nearest`: `Box(-1, 1, (4 + 3 (g + m),), float32)`, at most 52 floats with the default `neighbours=8`; tables below |
| State | `absolute`, `egocentric` and `nearest`: `Box(0, 1, (5n + 1,), float32)` (`Box(-1, 1, ...)` for `egocentric` and `nearest`); `relative`: `Box(-1, 1, (2n^2 + 5n + 1,), float32)` |

**Layout.** At reset the n goals are put on n distinct cells of the `grid_size x grid_size`
grid and each agent on a uniformly random cell (agents may share cells with each other and
with goals). Goals do not move. `layout="random"` (the default) draws new goal cells at
every reset; `layout="fixed"` draws them once from `numpy.random.default_rng(layout_seed)`,
independently of `reset(seed=...)`, and keeps them for every episode of every env made
with that `layout_seed` (only the agents' start cells are drawn at reset). A move off the grid leaves the agent where it is; agents do
not block each other. Agents in `broken_agents` (indices) always execute noop, whatever
action they are given (the same paper's non-operational robot, section 3.3).
`start_on_goals=p` (default 0) starts a random share of the agents, from none to p over
episodes, on distinct goals (`coverage_core.sample_layout`): a start-state curriculum for
training, which the algorithms' `start_on_goals` config applies to their training envs
only.

**Global state** (`state()`, float32, length 5n + 1), positions as `(row, col)`:

| slice | content |
|---|---|
| `[0, 2n)` | agent positions, `(row_0, col_0, row_1, col_1, ...) / grid_size` |
| `[2n, 4n)` | goal positions, same layout |
| `[4n, 5n)` | 1.0 where goal j holds at least one agent, else 0.0 |
| `[5n]` | steps elapsed since reset / max_steps |

With `observation="relative"` the state gains, at `[5n + 1, 5n + 1 + 2n^2)`, every
agent-goal offset: entry `5n + 1 + 2(i n + j) + c` is `(goal_j - agent_i)[c] / grid_size`
(c = 0 row, 1 col), in [-1, 1].

Agent i's observation is the state followed by `one_hot(i, n)`; with `relative`, then its
egocentric offsets, normalised by grid_size:

| slice (after the state and the one-hot) | content |
|---|---|
| `[0, 2n)` | `(goal_j - agent_i) / grid_size` for j = 0..n-1, row then col |
| `[2n, 4n - 2)` | `(agent_m - agent_i) / grid_size` for the other agents m != i in index order |

With `observation="egocentric"` the state is the absolute one, and agent i's observation
holds no copy of it (its length grows as 6n + 1, not as the relative one's 2n^2 + 10n - 1,
so teams of many agents can replay it):

| slice | content |
|---|---|
| `[0, 2)` | its own cell `/ grid_size` |
| `[2]` | steps elapsed since reset / max_steps |
| `[3, 3 + n)` | 1.0 where goal j holds at least one agent |
| `[3 + n, 3 + 2n)` | `one_hot(i, n)` |
| `[3 + 2n, 3 + 4n)` | `(goal_j - agent_i) / grid_size` for j = 0..n-1, row then col |
| `[3 + 4n, 6n + 1)` | `(agent_m - agent_i) / grid_size` for the other agents m != i in index order |

With `observation="nearest"` the state is the absolute one too, and agent i sees only its
neighbourhood, in a form that does not depend on the goals' or agents' indices nor grows with
the team: its `g = min(neighbours, n)` nearest goals and `m = min(neighbours, n - 1)` nearest
other agents (Manhattan distance, ties by the lower index; `neighbours` defaults to 8):

| slice | content |
|---|---|
| `[0, 2)` | its own cell `/ grid_size` |
| `[2]` | steps elapsed since reset / max_steps |
| `[3]` | 1.0 where it stands on a goal |
| `[4, 4 + 3g)` | per nearest goal j: `(goal_j - agent_i) / grid_size`, then 1.0 where another agent stands on it |
| `[4 + 3g, 4 + 3(g + m))` | per nearest agent a: `(agent_a - agent_i) / grid_size`, then 1.0 where a stands on a goal |

**Rewards** (a team reward, the same for every agent; distances are Manhattan):
- `sparse` (the paper's): 1 on the step when every goal holds an agent, and the episode
  terminates; 0 otherwise.
- `coverage`: the fraction of goals holding an agent after the move.
- `distance`: minus the mean, over goals, of the distance to the nearest agent, divided by
  grid_size.

Only `sparse` terminates; `coverage` and `distance` run to `max_steps` so that holding the
goals keeps paying. Every episode is truncated after `max_steps` steps (a step that
terminates is not also marked truncated).

**Infos** per agent: `covered_fraction` (float), `success` (every goal holds an agent),
`potential` (float: minus the minimum, over one-to-one assignments of agents to goals, of
the summed Manhattan distances, divided by grid_size; exactly 0.0 when every goal holds an
agent; what `shaping=True` of the training algorithms uses), and after each step `team_reward` (the team reward, to be counted once per step in returns,
not summed over agents).

`env.unwrapped.agent_positions` and `env.unwrapped.goal_positions` are `[n, 2]` int64 arrays
of `(row, col)`. `render_mode="rgb_array"` makes `render()` return an RGB frame; see
`spnpolicy.envs.render.save_episode` to write an episode to a GIF or PNG.

**Seeding.** `reset(seed=s)` makes a fresh `numpy.random.default_rng(s)`; a later `reset()`
without a seed continues that generator. The environment draws only through
`coverage_core.sample_layout`, which `CoverageVecEnv` shares.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from spnpolicy.envs import coverage_core as core
from spnpolicy.envs.coverage_core import CoverageConfig as Config
from spnpolicy.envs.render import GridworldRenderer
from spnpolicy.envs.team_env import TeamEnv
from spnpolicy.envs.validation import check_joint_action

RENDER_MODES = ("rgb_array",)


class CoverageEnv(TeamEnv):
    """The coverage gridworld as a PettingZoo `ParallelEnv` (see the module docstring)."""

    metadata = {"name": "coverage_v0", "render_modes": list(RENDER_MODES), "render_fps": 5,
                "is_parallelizable": True}

    def __init__(self, config: core.CoverageConfig, render_mode: str | None = None) -> None:
        self.config = config
        if render_mode is not None and render_mode not in RENDER_MODES:
            raise ValueError(f"render_mode must be None or one of {RENDER_MODES}, "
                             f"got {render_mode!r}")
        n, low = config.num_agents, config.low
        super().__init__(n, lambda: spaces.Box(low, 1.0, (config.obs_dim,), np.float32),
                         lambda: spaces.Discrete(core.NUM_ACTIONS),
                         spaces.Box(low, 1.0, (config.state_dim,), np.float32), render_mode)
        self._move_table = self.config.move_table()
        self._rng = np.random.default_rng()
        self._renderer = GridworldRenderer(self.config.grid_size)
        self.agent_positions = np.zeros((n, 2), dtype=np.int64)
        self.goal_positions = np.zeros((n, 2), dtype=np.int64)
        self.elapsed = 0

    def reset(self, seed: int | None = None, options: dict | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.agent_positions, self.goal_positions = core.sample_layout(self._rng, self.config)
        self.elapsed = 0
        self.agents = self.possible_agents[:]
        distances = core.goal_distances(self.agent_positions, self.goal_positions)
        return self._observe(distances), self._infos(distances)

    def step(self, actions: dict[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        joint = np.array(check_joint_action(actions, self.agents, core.NUM_ACTIONS))
        self.agent_positions = core.move(self.agent_positions, joint, self._move_table,
                                         self.config.grid_size)
        self.elapsed += 1
        distances = core.goal_distances(self.agent_positions, self.goal_positions)
        reward = float(core.team_reward(distances, self.config))
        terminated = self.config.reward == "sparse" and bool((distances == 0).all())
        truncated = self.elapsed >= self.config.max_steps and not terminated
        agents = self.agents
        observations = self._observe(distances)
        infos = self._infos(distances, reward)
        if terminated or truncated:
            self.agents = []
        return (observations, dict.fromkeys(agents, reward),
                dict.fromkeys(agents, terminated), dict.fromkeys(agents, truncated), infos)

    def state(self) -> np.ndarray:
        distances = core.goal_distances(self.agent_positions, self.goal_positions)
        return self._state(distances)

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gymnasium.logger.warn("render() called with render_mode=None; pass "
                                  "render_mode='rgb_array' to parallel_env to get frames.")
            return None
        return self._renderer.render(self.agent_positions, self.goal_positions,
                                     self.config.broken_agents)

    def _state(self, distances: np.ndarray) -> np.ndarray:
        return core.global_state(self.agent_positions, self.goal_positions, distances == 0,
                                 self.elapsed, self.config)

    def _observe(self, distances: np.ndarray) -> dict[str, np.ndarray]:
        obs = core.observations(self._state(distances), self.config)
        return {agent: obs[i] for i, agent in enumerate(self.possible_agents)}

    def _infos(self, distances: np.ndarray, reward: float | None = None
               ) -> dict[str, dict[str, Any]]:
        """Per-agent infos; `team_reward` only after a step (`reward` given)."""
        covered = distances == 0
        phi = core.potential(self.agent_positions, self.goal_positions, self.config.grid_size)
        info = {"covered_fraction": float(covered.mean()), "success": bool(covered.all()),
                "potential": float(phi)}
        if reward is not None:
            info["team_reward"] = reward
        return {agent: dict(info) for agent in self.possible_agents}


def parallel_env(num_agents: int = Config.num_agents, grid_size: int = Config.grid_size,
                 max_steps: int = Config.max_steps, reward: str = Config.reward,
                 broken_agents: tuple[int, ...] = Config.broken_agents,
                 render_mode: str | None = None, layout: str = Config.layout,
                 layout_seed: int = Config.layout_seed,
                 observation: str = Config.observation,
                 start_on_goals: float = Config.start_on_goals,
                 neighbours: int = Config.neighbours) -> CoverageEnv:
    """Make the coverage gridworld; arguments as in the module docstring.

    Raises ValueError naming the argument when one is out of range (an unknown `reward`,
    `layout` or `observation`, a negative `layout_seed`, ...).
    """
    config = Config(num_agents, grid_size, max_steps, reward, broken_agents, layout,
                    layout_seed, observation, start_on_goals, neighbours)
    return CoverageEnv(config, render_mode)
