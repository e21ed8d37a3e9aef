"""Rules of the coverage gridworld as batched numpy functions.

The PettingZoo environment (`coverage_v0`, no batch dimension) and the vectorised twin
(`coverage_vec`, a leading `[E]` dimension) both call these functions, so the two can only
differ in bookkeeping (seeding, resets), which the tests compare step for step.

Shapes: `...` is any leading batch shape (empty for one environment); `n` agents and `n`
goals; positions are int64 `(row, col)` pairs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from spnpolicy.envs.validation import check_indices, check_int

NUM_ACTIONS = 6
ACTION_NAMES = ("noop", "up", "down", "left", "right", "stay")
# (row, col) displacement of each action; "up" decreases the row index.
MOVES = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1], [0, 0]], dtype=np.int64)
REWARDS = ("sparse", "coverage", "distance")


@dataclass(frozen=True)
class CoverageConfig:
    """Validated settings of one coverage gridworld (see `coverage_v0` for their meaning).

    The field defaults are the defaults of `coverage_v0.parallel_env` and `CoverageVecEnv`.
    """

    num_agents: int = 6
    grid_size: int = 20
    max_steps: int = 200
    reward: str = "sparse"
    broken_agents: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        n = check_int("num_agents", self.num_agents, 1)
        size = check_int("grid_size", self.grid_size, 1)
        if size * size < n:
            raise ValueError(
                f"grid_size must be >= {math.isqrt(n - 1) + 1} so that num_agents={n} goals "
                f"fit on distinct cells (grid_size**2 >= {n}), got grid_size={size}"
            )
        object.__setattr__(self, "num_agents", n)
        object.__setattr__(self, "grid_size", size)
        object.__setattr__(self, "max_steps", check_int("max_steps", self.max_steps, 1))
        if self.reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {self.reward!r}")
        object.__setattr__(self, "broken_agents",
                           check_indices("broken_agents", self.broken_agents, n))

    @property
    def state_dim(self) -> int:
        """Length of the global state vector: 5n + 1."""
        return 5 * self.num_agents + 1

    @property
    def obs_dim(self) -> int:
        """Length of one agent's observation: the state plus a one-hot of n: 6n + 1."""
        return self.state_dim + self.num_agents

    def move_table(self) -> np.ndarray:
        """`[n * 6, 2]` displacement of agent i taking action a at row `6 i + a`.

        Broken agents' rows are all zero: they execute noop whatever they are given.
        """
        table = np.tile(MOVES, (self.num_agents, 1, 1))
        table[list(self.broken_agents)] = 0
        return table.reshape(-1, 2)


def sample_layout(rng: np.random.Generator,
                  config: CoverageConfig) -> tuple[np.ndarray, np.ndarray]:
    """Draw one episode's start: `(agent_positions [n, 2], goal_positions [n, 2])`.

    Goals occupy n distinct cells; agents are uniform over all cells, independently, so
    they may share cells with each other and with goals. The draws are, in this order,
    `rng.choice(cells, n, replace=False)` for the goals and `rng.integers(0, cells, n)` for
    the agents (cells numbered row-major); both environments use exactly this.
    """
    size, n = config.grid_size, config.num_agents
    goal_cells = rng.choice(size * size, size=n, replace=False)
    agent_cells = rng.integers(0, size * size, size=n)
    agents = np.stack(np.divmod(agent_cells, size), axis=-1).astype(np.int64)
    goals = np.stack(np.divmod(goal_cells, size), axis=-1).astype(np.int64)
    return agents, goals


def move(agent_positions: np.ndarray, actions: np.ndarray, move_table: np.ndarray,
         grid_size: int) -> np.ndarray:
    """New positions `[..., n, 2]` after `actions [..., n]`; off-grid moves stay put.

    `move_table` is `CoverageConfig.move_table()`, computed once by the caller.
    """
    rows = actions + NUM_ACTIONS * np.arange(actions.shape[-1])
    moved = agent_positions + move_table[rows]
    return np.clip(moved, 0, grid_size - 1, out=moved)


def goal_distances(agent_positions: np.ndarray, goal_positions: np.ndarray) -> np.ndarray:
    """Manhattan distance `[..., n]` from each goal to its nearest agent."""
    # Goals and agents first, batch last: every operation then runs over contiguous batch
    # rows, several times faster than reducing short innermost axes.
    agents = np.ascontiguousarray(np.moveaxis(agent_positions, (-2, -1), (0, 1)))
    goals = np.ascontiguousarray(np.moveaxis(goal_positions, (-2, -1), (0, 1)))
    distance = np.abs(goals[:, None, 0] - agents[None, :, 0])      # [goal, agent, ...]
    distance += np.abs(goals[:, None, 1] - agents[None, :, 1])
    return np.ascontiguousarray(np.moveaxis(distance.min(axis=1), 0, -1))


def team_reward(distances: np.ndarray, config: CoverageConfig) -> np.ndarray:
    """Team reward `[...]` (float32) given `goal_distances(...) [..., n]`.

    sparse: 1 when every goal holds an agent, else 0; coverage: the fraction of goals
    covered; distance: minus the mean goal-to-nearest-agent distance over grid_size.
    """
    covered = distances == 0
    if config.reward == "sparse":
        reward = covered.all(axis=-1)
    elif config.reward == "coverage":
        reward = covered.mean(axis=-1)
    else:
        reward = -distances.mean(axis=-1) / config.grid_size
    return np.asarray(reward, dtype=np.float32)


def global_state(agent_positions: np.ndarray, goal_positions: np.ndarray, covered: np.ndarray,
                 elapsed: np.ndarray | int, config: CoverageConfig) -> np.ndarray:
    """Global state `[..., 5n + 1]` float32 in [0, 1] (layout in `coverage_v0`'s docstring).

    `covered [..., n]` is bool per goal; `elapsed [...]` counts steps since reset.
    """
    n, size = config.num_agents, config.grid_size
    lead = covered.shape[:-1]
    state = np.empty(lead + (config.state_dim,), dtype=np.float32)
    np.divide(agent_positions.reshape(lead + (2 * n,)), size, out=state[..., : 2 * n])
    np.divide(goal_positions.reshape(lead + (2 * n,)), size, out=state[..., 2 * n : 4 * n])
    state[..., 4 * n : 5 * n] = covered
    state[..., 5 * n] = np.divide(elapsed, config.max_steps)
    return state


def observations(state: np.ndarray, num_agents: int) -> np.ndarray:
    """Per-agent observations `[..., n, S + n]`: the state `[..., S]` then a one-hot of i."""
    lead, dim = state.shape[:-1], state.shape[-1]
    obs = np.empty(lead + (num_agents, dim + num_agents), dtype=np.float32)
    obs[..., :dim] = state[..., None, :]
    obs[..., dim:] = np.eye(num_agents, dtype=np.float32)
    return obs


def relabel_goals(states: np.ndarray, goal_states: np.ndarray, order: np.ndarray,
                  config: CoverageConfig) -> tuple[np.ndarray, ...]:
    """Hindsight goals: `states [..., S]` with the goals moved to where the agents are in
    `goal_states [..., S]`, goal j on agent `order[..., j]`'s cell.

    `order [..., n]` is a permutation of the agents per row (shuffled by the caller, so that
    goal j is not always agent j's). The covered flags are recomputed; positions and the
    step counter are kept. Returns `(relabelled [..., S], reward [...], terminated [...],
    valid [...])`: the team reward (float32) and termination of a step that arrives in the
    relabelled state (`team_reward`; only `sparse` terminates, when every goal holds an
    agent), and `valid` where the agents' cells in `goal_states` are distinct (goals must
    be; other rows keep their goals).
    """
    n, size = config.num_agents, config.grid_size
    lead = states.shape[:-1]
    agents = np.rint(states[..., : 2 * n] * size).astype(np.int64).reshape(lead + (n, 2))
    targets = np.rint(goal_states[..., : 2 * n] * size).astype(np.int64).reshape(lead + (n, 2))
    goals = np.take_along_axis(targets, order[..., None], axis=-2)
    cells = np.sort(targets[..., 0] * size + targets[..., 1], axis=-1)
    valid = (cells[..., 1:] != cells[..., :-1]).all(axis=-1)
    goals = np.where(valid[..., None, None], goals,
                     np.rint(states[..., 2 * n : 4 * n] * size).astype(np.int64)
                     .reshape(lead + (n, 2)))
    distances = goal_distances(agents, goals)
    covered = distances == 0
    elapsed = np.rint(states[..., 5 * n] * config.max_steps)
    relabelled = global_state(agents, goals, covered, elapsed, config)
    terminated = covered.all(axis=-1) & (config.reward == "sparse")
    return relabelled, team_reward(distances, config), terminated, valid
