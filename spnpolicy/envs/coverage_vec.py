"""`CoverageVecEnv`: `num_envs` coverage gridworlds stepped together in batched numpy.

The rules are `coverage_v0`'s (shared through `coverage_core`); this class adds batching
and auto-reset. All agents act every step, so arrays have a fixed `[E, n, ...]` shape.

```python
env = CoverageVecEnv(num_envs=256, num_agents=6, seed=0)
obs = env.reset()                                   # [E, n, 6n + 1] float32
actions = np.random.default_rng(0).integers(0, 6, size=(256, 6))
obs, reward, terminated, truncated, info = env.step(actions)
```

**Seeding.** Copy e owns `numpy.random.default_rng(seed + e)`, so with `seed=s` it replays
exactly `coverage_v0.parallel_env(...)` reset with `reset(seed=s + e)` and, after each of
its episodes ends, reset again with `reset()` (no seed). `seed=None` gives every copy a
generator with fresh OS entropy.

**Auto-reset.** When copy e terminates or is truncated, `step` resets it at once: the
returned `obs[e]` is the first observation of its next episode, while
`info["final_observation"][e]` and `info["final_state"][e]` hold the last observation and
state of the episode that ended (for copies that did not end they equal `obs[e]` and
`state()[e]`). `reward`, `terminated`, `truncated`, `covered_fraction` and `success` describe
the step just taken, before any reset.
"""

from __future__ import annotations

import numpy as np

from spnpolicy.envs import coverage_core as core
from spnpolicy.envs.coverage_core import CoverageConfig as Config
from spnpolicy.envs.batched import BatchedEnv, generator_states, restore_generators
from spnpolicy.envs.validation import check_int


class CoverageVecEnv(BatchedEnv):
    """`num_envs` copies of the coverage gridworld; other arguments as in `coverage_v0`.

    Attributes (updated in place by `reset` and `step`):
        agent_positions: `[E, n, 2]` int64 `(row, col)`.
        goal_positions: `[E, n, 2]` int64.
        elapsed: `[E]` int64 steps since each copy's last reset.

    `step` actions are `[E, n]` integers in [0, 6); its info holds, beside
    `final_observation` and `final_state`, `covered_fraction [E]` float32, `success [E]` bool
    and `potential [E]` float64, all of the state the step reached, before any reset.
    """

    def __init__(self, num_envs: int, num_agents: int = Config.num_agents,
                 grid_size: int = Config.grid_size, max_steps: int = Config.max_steps,
                 reward: str = Config.reward,
                 broken_agents: tuple[int, ...] = Config.broken_agents,
                 seed: int | None = None, layout: str = Config.layout,
                 layout_seed: int = Config.layout_seed,
                 observation: str = Config.observation,
                 start_on_goals: float = Config.start_on_goals,
                 neighbours: int = Config.neighbours) -> None:
        num_envs = check_int("num_envs", num_envs, 1)
        config = Config(num_agents, grid_size, max_steps, reward, broken_agents, layout,
                        layout_seed, observation, start_on_goals, neighbours)
        super().__init__(num_envs, config, core.NUM_ACTIONS, seed)
        self._move_table = config.move_table()
        shape = (num_envs, self.num_agents, 2)
        self.agent_positions = np.zeros(shape, dtype=np.int64)
        self.goal_positions = np.zeros(shape, dtype=np.int64)
        # [E, n] bool, whether each goal holds an agent: written wherever positions change,
        # so that a step finds the goal distances once
        self._covered = np.zeros((num_envs, self.num_agents), dtype=bool)

    def settled(self) -> np.ndarray:
        """`[E, n]` bool: whether each agent stands on a goal in the current state (its own
        part of the task done, as far as the agent alone can tell)."""
        return core.on_cells(self.agent_positions, self.goal_positions, self.config.grid_size)

    def copy_copies(self, source: np.ndarray, target: np.ndarray) -> None:
        """Set the copies `target [m]` to the current states of the copies `source [m]`:
        positions, goals and step counters; each copy keeps its own generator."""
        source, target = np.asarray(source, dtype=np.int64), np.asarray(target, dtype=np.int64)
        if source.shape != target.shape or np.intersect1d(source, target).size:
            raise ValueError(f"copy_copies needs disjoint source and target copies of one "
                             f"length, got {source.tolist()} and {target.tolist()}")
        self._state = self._require_state().copy()   # the last step's final states stay
        for array in (self.agent_positions, self.goal_positions, self.elapsed, self._covered,
                      self._state):
            array[target] = array[source]

    def snapshot(self) -> dict:
        """Everything that determines the future: positions, step counters and every copy's
        generator state, as JSON-friendly lists; :meth:`restore` continues from it exactly."""
        self._require_state()
        return {"agent_positions": self.agent_positions.tolist(),
                "goal_positions": self.goal_positions.tolist(),
                "elapsed": self.elapsed.tolist(),
                "rngs": generator_states(self._rngs)}

    def restore(self, snapshot: dict) -> np.ndarray:
        """Continue from a :meth:`snapshot` (of an env with the same settings and
        `num_envs`); returns the observations `[E, n, obs_dim]` at that point."""
        shape = self.agent_positions.shape
        agents = np.asarray(snapshot["agent_positions"], dtype=np.int64)
        goals = np.asarray(snapshot["goal_positions"], dtype=np.int64)
        elapsed = np.asarray(snapshot["elapsed"], dtype=np.int64)
        if (agents.shape != shape or goals.shape != shape or elapsed.shape != (self.num_envs,)
                or len(snapshot["rngs"]) != self.num_envs):
            raise ValueError(f"snapshot does not fit this env (num_envs={self.num_envs}, "
                             f"num_agents={self.num_agents}): positions {list(agents.shape)}, "
                             f"goals {list(goals.shape)}, elapsed {list(elapsed.shape)}")
        self._rngs = restore_generators(snapshot["rngs"])
        self.agent_positions, self.goal_positions, self.elapsed = agents, goals, elapsed
        self._covered = core.goal_distances(agents, goals) == 0
        self._state, obs = self._observe(slice(None))
        return obs

    def _advance(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                     dict[str, np.ndarray]]:
        self.agent_positions = core.move(self.agent_positions, actions, self._move_table,
                                         self.config.grid_size)
        distances = core.goal_distances(self.agent_positions, self.goal_positions)
        covered = self._covered = distances == 0
        success = covered.all(axis=-1)
        if self.config.reward == "sparse":
            terminated = success
        else:
            terminated = np.zeros(self.num_envs, dtype=bool)
        info = {"covered_fraction": covered.mean(axis=-1, dtype=np.float32),
                "success": success,
                "potential": core.potential(self.agent_positions, self.goal_positions,
                                            self.config.grid_size)}
        return core.team_reward(distances, self.config), terminated, info

    def _draw_layouts(self, copies: np.ndarray) -> None:
        for e in copies.tolist():
            self.agent_positions[e], self.goal_positions[e] = core.sample_layout(
                self._rngs[e], self.config)
        self._covered[copies] = core.goal_distances(self.agent_positions[copies],
                                                    self.goal_positions[copies]) == 0

    def _observe(self, copies: slice | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        state = core.global_state(self.agent_positions[copies], self.goal_positions[copies],
                                  self._covered[copies], self.elapsed[copies], self.config)
        return state, core.observations(state, self.config)
