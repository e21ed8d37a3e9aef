"""Two-agent matrix games as PettingZoo `ParallelEnv`s.

```python
from spnpolicy.envs import matrix_v0
env = matrix_v0.parallel_env(game="climbing")
observations, infos = env.reset(seed=0)
_, rewards, terminated, _, infos = env.step({"agent_0": 0, "agent_1": 0})   # rewards 11
```

`agent_0` picks the row, `agent_1` the column. Payoffs (row action first):

| game | payoff | optimal joint actions |
|---|---|---|
| `climbing` | `[[11, -30, 0], [-30, 7, 0], [0, 6, 5]]` | (0, 0) |
| `penalty` | `[[-k, 0, 10], [0, 2, 0], [10, 0, -k]]`, k >= 0 (default 100) | (0, 2), (2, 0) |
| `coordination` | `[[0, -5], [-5, 10]]` | (1, 1) |
| `linear` (Albrecht et al. 2024) | `[[1, 5], [5, 9]]` | (1, 1) |
| `monotonic` (Albrecht et al. 2024) | `[[0, 0], [0, 10]]` | (1, 1) |
| `stag_hunt` (general-sum) | row agent `[[4, 0], [3, 2]]`, column agent its transpose | (0, 0) |

**Observations** are constant: `[1.0]` (`Box(0, 1, (1,), float32)`), and so is `state()`.
An episode is `episode_length` plays of the game (default 1, the one-step game) and
terminates after the last one.

**Rewards.** In the cooperative games every agent receives the common payoff; in
`stag_hunt` each agent receives its own. `infos[agent]["team_reward"]` is the team reward:
the common payoff, or for `stag_hunt` the sum of both agents' payoffs (what cooperative
learners maximise). A trainer's episode return is the sum over steps of `team_reward`,
counted once per step, never summed over agents. Infos also carry `joint_action` and
`optimal` (whether the joint action maximises the team reward).

On the unwrapped env: `payoff` (team payoff `[k, k]`), `agent_payoffs` (`[2, k, k]`, agent
i's payoff), `num_actions`, `optimal_joint_actions` (tuple of `(row, col)`) and
`optimal_value` (the largest team payoff).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from spnpolicy.envs.team_env import TeamEnv
from spnpolicy.envs.validation import check_int, check_joint_action, check_number

GAMES = ("climbing", "penalty", "coordination", "linear", "monotonic", "stag_hunt")
DEFAULT_PENALTY = 100
_COMMON_PAYOFFS = {
    "climbing": [[11, -30, 0], [-30, 7, 0], [0, 6, 5]],
    "coordination": [[0, -5], [-5, 10]],
    "linear": [[1, 5], [5, 9]],
    "monotonic": [[0, 0], [0, 10]],
}
_STAG_HUNT_ROW = [[4, 0], [3, 2]]


def agent_payoffs(game: str, k: float | None = None) -> np.ndarray:
    """Each agent's payoff `[2, num_actions, num_actions]` float32 for `game`.

    `k` is the penalty magnitude: required for `penalty`, refused for the other games.
    """
    if game not in GAMES:
        raise ValueError(f"game must be one of {GAMES}, got {game!r}")
    if game != "penalty" and k is not None:
        raise ValueError(f"k applies to game='penalty' only, got k={k!r} for game={game!r}")
    if game == "penalty":
        check_number("k", k, 0)
        common = [[-k, 0, 10], [0, 2, 0], [10, 0, -k]]
    elif game == "stag_hunt":
        row = np.array(_STAG_HUNT_ROW, dtype=np.float32)
        return np.stack([row, row.T])
    else:
        common = _COMMON_PAYOFFS[game]
    table = np.array(common, dtype=np.float32)
    return np.stack([table, table])


class MatrixGameEnv(TeamEnv):
    """A two-agent matrix game repeated `episode_length` times (see the module docstring)."""

    metadata = {"name": "matrix_v0", "render_modes": [], "is_parallelizable": True}

    def __init__(self, game: str, k: float | None, episode_length: int) -> None:
        if game == "penalty" and k is None:
            k = DEFAULT_PENALTY
        self.agent_payoffs = agent_payoffs(game, k)
        self.game = game
        self.k = k
        self.episode_length = check_int("episode_length", episode_length, 1)
        self.payoff = (self.agent_payoffs.sum(axis=0) if game == "stag_hunt"
                       else self.agent_payoffs[0])
        self.num_actions = self.payoff.shape[0]
        self.optimal_value = float(self.payoff.max())
        self.optimal_joint_actions = tuple(
            (int(row), int(col)) for row, col in np.argwhere(self.payoff == self.payoff.max()))
        super().__init__(2, lambda: spaces.Box(0.0, 1.0, (1,), np.float32),
                         lambda: spaces.Discrete(self.num_actions),
                         spaces.Box(0.0, 1.0, (1,), np.float32))
        self.elapsed = 0

    def reset(self, seed: int | None = None, options: dict | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        """Start an episode; the game has no randomness, so `seed` changes nothing."""
        self.agents = self.possible_agents[:]
        self.elapsed = 0
        return self._observe(), {agent: {} for agent in self.agents}

    def step(self, actions: dict[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        joint = tuple(check_joint_action(actions, self.agents, self.num_actions))
        self.elapsed += 1
        team = float(self.payoff[joint])
        info = {"team_reward": team, "joint_action": joint,
                "optimal": joint in self.optimal_joint_actions}
        rewards = {agent: float(self.agent_payoffs[i][joint])
                   for i, agent in enumerate(self.possible_agents)}
        terminated = self.elapsed >= self.episode_length
        observations = self._observe()
        infos = {agent: dict(info) for agent in self.possible_agents}
        if terminated:
            self.agents = []
        return (observations, rewards, dict.fromkeys(rewards, terminated),
                dict.fromkeys(rewards, False), infos)

    def state(self) -> np.ndarray:
        return np.ones(1, dtype=np.float32)

    def _observe(self) -> dict[str, np.ndarray]:
        return {agent: np.ones(1, dtype=np.float32) for agent in self.possible_agents}


def parallel_env(game: str = "climbing", k: float | None = None,
                 episode_length: int = 1) -> MatrixGameEnv:
    """Make a matrix game; arguments as in the module docstring."""
    return MatrixGameEnv(game, k, episode_length)
