"""Rules of the coverage gridworld as batched numpy functions.

The PettingZoo environment (`coverage_v0`, no batch dimension) and the vectorised twin
(`coverage_vec`, a leading `[E]` dimension) both call these functions, so the two can only
differ in bookkeeping (seeding, resets), which the tests compare step for step.

Shapes: `...` is any leading batch shape (empty for one environment); `n` agents and `n`
goals; positions are int64 `(row, col)` pairs.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy.optimize import linear_sum_assignment

from spnpolicy.envs.validation import check_indices, check_int

NUM_ACTIONS = 6
ACTION_NAMES = ("noop", "up", "down", "left", "right", "stay")
# (row, col) displacement of each action; "up" decreases the row index.
MOVES = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1], [0, 0]], dtype=np.int64)
REWARDS = ("sparse", "coverage", "distance")
LAYOUTS = ("random", "fixed")
OBSERVATIONS = ("absolute", "relative", "egocentric", "nearest")
#: Largest team whose assignment potential is computed by enumerating the n! assignments
#: (batched); larger teams use scipy's `linear_sum_assignment` row by row.
ENUMERATE_MAX_AGENTS = 6


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
    layout: str = "random"
    layout_seed: int = 0
    observation: str = "absolute"
    start_on_goals: float = 0.0
    neighbours: int = 8

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
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        object.__setattr__(self, "layout_seed", check_int("layout_seed", self.layout_seed, 0))
        if self.observation not in OBSERVATIONS:
            raise ValueError(f"observation must be one of {OBSERVATIONS}, "
                             f"got {self.observation!r}")
        share = self.start_on_goals
        if (isinstance(share, bool) or not isinstance(share, (int, float))
                or not 0.0 <= share <= 1.0):
            raise ValueError(f"start_on_goals must be a number in [0, 1], got {share!r}")
        object.__setattr__(self, "start_on_goals", float(share))
        object.__setattr__(self, "neighbours", check_int("neighbours", self.neighbours, 1))

    @property
    def relative(self) -> bool:
        """Whether the state holds every agent-goal offset (``observation="relative"``)."""
        return self.observation == "relative"

    @property
    def nearest_counts(self) -> tuple[int, int]:
        """`(goals, agents)` seen by one agent with `nearest` observations: the
        `min(neighbours, n)` nearest goals and `min(neighbours, n - 1)` nearest other agents."""
        n = self.num_agents
        return min(self.neighbours, n), min(self.neighbours, n - 1)

    @property
    def state_dim(self) -> int:
        """Length of the global state vector: 5n + 1, plus 2n^2 offsets when relative."""
        n = self.num_agents
        return 5 * n + 1 + (2 * n * n if self.relative else 0)

    @property
    def obs_dim(self) -> int:
        """Length of one agent's observation: the state, a one-hot of n, and when relative
        2n goal offsets and 2(n - 1) agent offsets: 6n + 1 or 2n^2 + 10n - 1; egocentric:
        its own cell, the clock, the covered flags, a one-hot of n and the same offsets,
        6n + 1; nearest: its own cell, the clock, whether it stands on a goal, then 3 floats
        per nearest goal and per nearest other agent, 4 + 3 (g + m) with `(g, m) =
        nearest_counts` (no term grows with n past `neighbours`)."""
        n = self.num_agents
        if self.observation == "egocentric":
            return 6 * n + 1
        if self.observation == "nearest":
            return 4 + 3 * sum(self.nearest_counts)
        return self.state_dim + n + (4 * n - 2 if self.relative else 0)

    @property
    def low(self) -> float:
        """Lower bound of state and observation entries: -1 with offsets, else 0."""
        return 0.0 if self.observation == "absolute" else -1.0

    def fixed_goals(self) -> np.ndarray:
        """`[n, 2]` goal cells of the `fixed` layout: the first draw of `sample_layout`
        with `numpy.random.default_rng(layout_seed)`, whatever the reset seed."""
        return _fixed_goals(self.num_agents, self.grid_size, self.layout_seed).copy()

    def move_table(self) -> np.ndarray:
        """`[n * 6, 2]` displacement of agent i taking action a at row `6 i + a`.

        Broken agents' rows are all zero: they execute noop whatever they are given.
        """
        table = np.tile(MOVES, (self.num_agents, 1, 1))
        table[list(self.broken_agents)] = 0
        return table.reshape(-1, 2)


@cache
def _fixed_goals(n: int, size: int, layout_seed: int) -> np.ndarray:
    goal_cells = np.random.default_rng(layout_seed).choice(size * size, size=n, replace=False)
    return np.stack(np.divmod(goal_cells, size), axis=-1).astype(np.int64)


def sample_layout(rng: np.random.Generator,
                  config: CoverageConfig) -> tuple[np.ndarray, np.ndarray]:
    """Draw one episode's start: `(agent_positions [n, 2], goal_positions [n, 2])`.

    Goals occupy n distinct cells; agents are uniform over all cells, independently, so
    they may share cells with each other and with goals. The draws are, in this order,
    `rng.choice(cells, n, replace=False)` for the goals (`random` layout only; `fixed`
    takes `config.fixed_goals()` and draws nothing for them) and `rng.integers(0, cells,
    n)` for the agents (cells numbered row-major); both environments use exactly this.

    With `config.start_on_goals = p > 0`, three more draws then move some agents onto
    goals: `u = rng.uniform(0, p)`, `rng.random(n) < u` picks each agent with probability
    u, and `rng.permutation(n)` gives agent i goal `perm[i]`, so the picked agents stand on
    distinct goals. Over episodes the share of agents that start on a goal thus runs from
    none to p (a start-state curriculum: some episodes begin nearly solved).
    """
    size, n = config.grid_size, config.num_agents
    if config.layout == "fixed":
        goals = config.fixed_goals()
    else:
        goal_cells = rng.choice(size * size, size=n, replace=False)
        goals = np.stack(np.divmod(goal_cells, size), axis=-1).astype(np.int64)
    agent_cells = rng.integers(0, size * size, size=n)
    agents = np.stack(np.divmod(agent_cells, size), axis=-1).astype(np.int64)
    if config.start_on_goals > 0:
        share = rng.uniform(0.0, config.start_on_goals)
        picked = rng.random(n) < share
        agents[picked] = goals[rng.permutation(n)[picked]]
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
    # rows (numpy is slow at reducing short innermost axes).
    agents = np.ascontiguousarray(np.moveaxis(agent_positions, (-2, -1), (0, 1)))
    goals = np.ascontiguousarray(np.moveaxis(goal_positions, (-2, -1), (0, 1)))
    distance = np.abs(goals[:, None, 0] - agents[None, :, 0])      # [goal, agent, ...]
    distance += np.abs(goals[:, None, 1] - agents[None, :, 1])
    return np.ascontiguousarray(np.moveaxis(distance.min(axis=1), 0, -1))


def on_cells(cells: np.ndarray, others: np.ndarray, grid_size: int) -> np.ndarray:
    """`[..., m]` bool: whether cell `i` of `cells [..., m, 2]` is one of `others [..., k, 2]`
    on a `grid_size` grid (the agents on a goal: `on_cells(agents, goals, size)`; the goals
    that hold an agent: `on_cells(goals, agents, size)`)."""
    batch = cells.shape[:-2]
    cells = cells.reshape(-1, *cells.shape[-2:])                           # [B, m, 2]
    others = others.reshape(-1, *others.shape[-2:])                        # [B, k, 2]
    rows = np.arange(len(cells))[:, None]
    flat = np.array([grid_size, 1])
    table = np.zeros((len(cells), grid_size * grid_size), dtype=bool)      # [B, cells]
    table[rows, others @ flat] = True
    return table[rows, cells @ flat].reshape(*batch, cells.shape[-2])


@cache
def _permutations(n: int) -> np.ndarray:
    return np.array(list(itertools.permutations(range(n))), dtype=np.int64)   # [n!, n]


def assignment_cost(agent_positions: np.ndarray, goal_positions: np.ndarray) -> np.ndarray:
    """Minimum over one-to-one assignments of agents to goals of the summed Manhattan
    distances, `[...]` int64 (exact: enumeration of the n! assignments for n <= 6, batched;
    scipy's `linear_sum_assignment` per row above)."""
    n = agent_positions.shape[-2]
    # Rows and columns added separately: numpy is slow at reducing a short innermost axis.
    cost = np.abs(agent_positions[..., :, None, 0] - goal_positions[..., None, :, 0])
    cost += np.abs(agent_positions[..., :, None, 1] - goal_positions[..., None, :, 1])
    if n <= ENUMERATE_MAX_AGENTS:                                   # cost [..., agent, goal]
        perms = _permutations(n)                                    # agent i -> goal perm[i]
        return cost[..., np.arange(n), perms].sum(-1).min(-1)
    flat = cost.reshape(-1, n, n)
    # A square problem's row indices are 0 .. n-1 in order: only the columns are kept.
    goal_of = np.stack([linear_sum_assignment(c)[1] for c in flat])           # [B, n]
    out = np.take_along_axis(flat, goal_of[:, :, None], axis=-1).sum(axis=(-2, -1))
    return out.reshape(cost.shape[:-2])


def potential(agent_positions: np.ndarray, goal_positions: np.ndarray,
              grid_size: int) -> np.ndarray:
    """Phi `[...]` float64: `-assignment_cost(...) / grid_size`; 0 exactly when every goal
    holds an agent (n agents, n goals: then each agent is on its own goal)."""
    return -assignment_cost(agent_positions, goal_positions) / grid_size


def state_positions(states: np.ndarray, config: CoverageConfig
                    ) -> tuple[np.ndarray, np.ndarray]:
    """`(agent_positions [..., n, 2], goal_positions [..., n, 2])` int64 read back from
    global states `[..., S]` (exact: positions are stored as integers / grid_size)."""
    n, size = config.num_agents, config.grid_size
    lead = states.shape[:-1]
    cells = np.rint(np.asarray(states[..., : 4 * n], dtype=np.float64) * size).astype(np.int64)
    return cells[..., : 2 * n].reshape(lead + (n, 2)), cells[..., 2 * n:].reshape(lead + (n, 2))


def state_potential(states: np.ndarray, config: CoverageConfig) -> np.ndarray:
    """`potential` `[...]` of the global states `[..., S]`."""
    return potential(*state_positions(states, config), config.grid_size)


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
    """Global state `[..., S]` float32 (layout in `coverage_v0`'s docstring): in [0, 1], and
    with `relative` observations the agent-goal offsets in [-1, 1] after them.

    `covered [..., n]` is bool per goal; `elapsed [...]` counts steps since reset.
    """
    n, size = config.num_agents, config.grid_size
    lead = covered.shape[:-1]
    state = np.empty(lead + (config.state_dim,), dtype=np.float32)
    np.divide(agent_positions.reshape(lead + (2 * n,)), size, out=state[..., : 2 * n])
    np.divide(goal_positions.reshape(lead + (2 * n,)), size, out=state[..., 2 * n : 4 * n])
    state[..., 4 * n : 5 * n] = covered
    state[..., 5 * n] = np.divide(elapsed, config.max_steps)
    if config.relative:   # [agent i, goal j, (row, col)] = (goal_j - agent_i) / size
        offsets = goal_positions[..., None, :, :] - agent_positions[..., :, None, :]
        np.divide(offsets.reshape(lead + (2 * n * n,)), size, out=state[..., 5 * n + 1:])
    return state


def observations(state: np.ndarray, config: CoverageConfig | int) -> np.ndarray:
    """Per-agent observations `[..., n, obs_dim]` of global states `[..., S]`.

    Agent i sees the state, then one-hot(i, n); with `relative` observations then its
    offsets to goals 0..n-1 (`(goal_j - agent_i) / grid_size`, row then col) and to the
    other agents in index order (`(agent_m - agent_i) / grid_size`, m != i). With
    `egocentric` observations it sees no copy of the state: its own cell `/ grid_size`,
    the clock, the goals' covered flags, one-hot(i, n), then the same offsets. With
    `nearest` observations see `nearest_observations`. An int `config` is the number of
    agents of an `absolute` env.
    """
    if not isinstance(config, CoverageConfig):
        config = CoverageConfig(num_agents=config, grid_size=max(1, math.isqrt(config - 1) + 1))
    if config.observation == "nearest":
        return nearest_observations(state, config)
    n, size = config.num_agents, config.grid_size
    lead = state.shape[:-1]
    obs = np.empty(lead + (n, config.obs_dim), dtype=np.float32)
    if config.observation == "egocentric":
        obs[..., :2] = state[..., : 2 * n].reshape(lead + (n, 2))
        obs[..., 2] = state[..., None, 5 * n]
        obs[..., 3 : 3 + n] = state[..., None, 4 * n : 5 * n]
        start = 3 + n
    else:
        start = state.shape[-1]
        obs[..., :start] = state[..., None, :]
    obs[..., start : start + n] = np.eye(n, dtype=np.float32)
    if config.observation == "absolute":
        return obs
    start += n
    agents, goals = state_positions(state, config)
    if config.relative:
        obs[..., start : start + 2 * n] = state[..., 5 * n + 1:].reshape(lead + (n, 2 * n))
    else:                                                     # [..., i, j, 2] -> [..., i, 2n]
        to_goals = goals[..., None, :, :] - agents[..., :, None, :]
        np.divide(to_goals.reshape(lead + (n, 2 * n)), size, out=obs[..., start : start + 2 * n])
    others = ~np.eye(n, dtype=bool)
    offsets = agents[..., None, :, :] - agents[..., :, None, :]           # [..., i, m, 2]
    offsets = offsets[..., others, :].reshape(lead + (n, 2 * (n - 1)))
    np.divide(offsets, size, out=obs[..., start + 2 * n:])
    return obs


def nearest_observations(state: np.ndarray, config: CoverageConfig) -> np.ndarray:
    """Per-agent `nearest` observations `[..., n, obs_dim]` of global states `[..., S]`.

    Agent i sees, with `(g, m) = config.nearest_counts`:
    `[0, 2)` its own cell `/ grid_size`; `[2]` the clock; `[3]` 1.0 if it stands on a goal;
    then for its g nearest goals `(row offset, col offset, held)`, the offsets
    `(goal_j - agent_i) / grid_size` and `held` 1.0 where another agent stands on goal j;
    then for its m nearest other agents `(row offset, col offset, settled)`, the offsets
    `(agent_a - agent_i) / grid_size` and `settled` 1.0 where agent a stands on a goal.
    Nearest is by Manhattan distance, ties broken by the lower index. No goal or agent index
    appears, so the observation has the same meaning in every layout and team size.
    """
    n, size = config.num_agents, config.grid_size
    g, m = config.nearest_counts
    lead = state.shape[:-1]
    agents, goals = state_positions(state, config)                        # [..., n, 2]
    obs = np.empty(lead + (n, config.obs_dim), dtype=np.float32)
    obs[..., :2] = state[..., : 2 * n].reshape(lead + (n, 2))
    obs[..., 2] = state[..., None, 5 * n]
    to_goals = goals[..., None, :, :] - agents[..., :, None, :]           # [..., i, j, 2]
    goal_distance = np.abs(to_goals).sum(axis=-1)                         # [..., i, j]
    on_goal = goal_distance == 0
    settled = on_goal.any(axis=-1)                                        # [..., i]
    obs[..., 3] = settled
    held_by_other = (on_goal.sum(axis=-2)[..., None, :] - on_goal) > 0     # [..., i, j]
    order = np.argsort(goal_distance, axis=-1, kind="stable")[..., :g]     # [..., i, g]
    block = np.empty(lead + (n, g, 3), dtype=np.float32)
    np.divide(np.take_along_axis(to_goals, order[..., None], axis=-2), size, out=block[..., :2])
    block[..., 2] = np.take_along_axis(held_by_other, order, axis=-1)
    obs[..., 4 : 4 + 3 * g] = block.reshape(lead + (n, 3 * g))
    if m:
        to_agents = agents[..., None, :, :] - agents[..., :, None, :]      # [..., i, a, 2]
        # an agent is never among its own m <= n - 1 nearest: past every other distance
        agent_distance = np.abs(to_agents).sum(axis=-1) + 2 * size * np.eye(n, dtype=np.int64)
        order = np.argsort(agent_distance, axis=-1, kind="stable")[..., :m]  # [..., i, m]
        block = np.empty(lead + (n, m, 3), dtype=np.float32)
        np.divide(np.take_along_axis(to_agents, order[..., None], axis=-2), size,
                  out=block[..., :2])
        block[..., 2] = np.take_along_axis(
            np.broadcast_to(settled[..., None, :], order.shape[:-1] + (n,)), order, axis=-1)
        obs[..., 4 + 3 * g:] = block.reshape(lead + (n, 3 * m))
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
    agents, own_goals = state_positions(states, config)
    targets, _ = state_positions(goal_states, config)
    goals = np.take_along_axis(targets, order[..., None], axis=-2)
    cells = np.sort(targets[..., 0] * size + targets[..., 1], axis=-1)
    valid = (cells[..., 1:] != cells[..., :-1]).all(axis=-1)
    goals = np.where(valid[..., None, None], goals, own_goals)
    distances = goal_distances(agents, goals)
    covered = distances == 0
    elapsed = np.rint(states[..., 5 * n] * config.max_steps)
    relabelled = global_state(agents, goals, covered, elapsed, config)
    terminated = covered.all(axis=-1) & (config.reward == "sparse")
    return relabelled, team_reward(distances, config), terminated, valid
