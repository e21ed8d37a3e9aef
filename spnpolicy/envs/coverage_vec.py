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
from spnpolicy.envs.validation import check_int, check_joint_actions


class CoverageVecEnv(BatchedEnv):
    """`num_envs` copies of the coverage gridworld; other arguments as in `coverage_v0`.

    Attributes (updated in place by `reset` and `step`):
        agent_positions: `[E, n, 2]` int64 `(row, col)`.
        goal_positions: `[E, n, 2]` int64.
        elapsed: `[E]` int64 steps since each copy's last reset.
    """

    def __init__(self, num_envs: int, num_agents: int = Config.num_agents,
                 grid_size: int = Config.grid_size, max_steps: int = Config.max_steps,
                 reward: str = Config.reward,
                 broken_agents: tuple[int, ...] = Config.broken_agents,
                 seed: int | None = None, layout: str = Config.layout,
                 layout_seed: int = Config.layout_seed,
                 observation: str = Config.observation) -> None:
        num_envs = check_int("num_envs", num_envs, 1)
        config = Config(num_agents, grid_size, max_steps, reward, broken_agents, layout,
                        layout_seed, observation)
        super().__init__(num_envs, config, core.NUM_ACTIONS, seed)
        self._move_table = config.move_table()
        shape = (num_envs, self.num_agents, 2)
        self.agent_positions = np.zeros(shape, dtype=np.int64)
        self.goal_positions = np.zeros(shape, dtype=np.int64)
        self.elapsed = np.zeros(num_envs, dtype=np.int64)

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start a new episode in every copy; returns observations `[E, n, obs_dim]`.

        With `seed`, copy e's generator restarts from `seed + e`; without, generators go on.
        """
        self._reseed(seed)
        everyone = np.arange(self.num_envs)
        self._state = np.empty((self.num_envs, self.state_dim), dtype=np.float32)
        self._reset_copies(everyone)
        return core.observations(self._state, self.config)

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
        covered = core.goal_distances(agents, goals) == 0
        self._state = core.global_state(agents, goals, covered, elapsed, self.config)
        return core.observations(self._state, self.config)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                 np.ndarray, dict[str, np.ndarray]]:
        """Advance every copy by one joint action.

        Args:
            actions: `[E, n]` integers in [0, 6).

        Returns:
            obs `[E, n, obs_dim]` float32, reward `[E]` float32, terminated `[E]` bool,
            truncated `[E]` bool, info with `covered_fraction [E]` float32, `success [E]`
            bool, `potential [E]` float64 (of the state the step reached, before any
            reset), `final_observation [E, n, obs_dim]` and `final_state [E, state_dim]`.
        """
        self._require_state()
        actions = check_joint_actions(actions, self.num_envs, self.num_agents, core.NUM_ACTIONS)
        positions = core.move(self.agent_positions, actions, self._move_table,
                              self.config.grid_size)
        self.agent_positions = positions
        self.elapsed += 1
        distances = core.goal_distances(positions, self.goal_positions)
        covered = distances == 0
        reward = core.team_reward(distances, self.config)
        success = covered.all(axis=-1)
        if self.config.reward == "sparse":
            terminated = success
        else:
            terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = (self.elapsed >= self.config.max_steps) & ~terminated
        final_state = core.global_state(positions, self.goal_positions, covered,
                                        self.elapsed, self.config)
        final_obs = core.observations(final_state, self.config)
        phi = core.potential(positions, self.goal_positions, self.config.grid_size)
        done = np.flatnonzero(terminated | truncated)
        self._state = final_state
        obs = final_obs
        if done.size:
            self._state = final_state.copy()
            self._reset_copies(done)
            obs = final_obs.copy()
            obs[done] = core.observations(self._state[done], self.config)
        info = {"covered_fraction": covered.mean(axis=-1, dtype=np.float32),
                "success": success,
                "potential": phi,
                "final_observation": final_obs, "final_state": final_state}
        return obs, reward, terminated, truncated, info

    def _reset_copies(self, indices: np.ndarray) -> None:
        """Draw new layouts for the copies in `indices [m]` and write their states."""
        for e in indices.tolist():
            self.agent_positions[e], self.goal_positions[e] = core.sample_layout(
                self._rngs[e], self.config)
        self.elapsed[indices] = 0
        agents, goals = self.agent_positions[indices], self.goal_positions[indices]
        covered = core.goal_distances(agents, goals) == 0
        self._state[indices] = core.global_state(agents, goals, covered, 0, self.config)
