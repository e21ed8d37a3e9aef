"""`lift`: a joint-action task family. n agents must lift one object together; a partial
attempt is penalised.

Each agent starts `0..distance` steps from the object (uniformly, independently) and has
four actions: 0 `wait`, 1 `approach` (one step closer; at the object it stays), 2 `retreat`
(one step away, at most `distance`), 3 `lift`. A step is a **lift** when at least
`required` agents (default: all n) are at the object and choose `lift`: the team gets
reward 1 and the episode ends (success). A step where some agent chooses `lift` but the
step is not a lift is a **failed attempt**: the team gets `-penalty`, once per step,
whoever tried. The deadline is part of the task: the state shows the time, and an episode
that reaches `max_steps` without a lift **terminates** (it is not a time-limit truncation
to bootstrap through; a learner that bootstraps from the last state's extrapolated value
learns that waiting is as good as lifting).

**Transient failures** (`failure_prob` q > 0): before every step each agent independently
fails with probability q; a failed agent executes `wait` whatever it chose. The failures
of the coming step are drawn in advance and announced: `stuck` `[E, n]` on the vec env, and
`infos[agent]["stuck"]` / `env.stuck` on the ParallelEnv, so that a controller can condition
on them; `infos[agent]["executed_action"]` is what the agent did (the training loop stores
it). With `observe_failures` the state also holds the n announced flags (the oracle).

This is the relative-overgeneralisation trap of the penalty matrix game spread over time:
while the others lift at random, lifting is worth less than waiting (with 2 agents and
uniform partners, `(1 - 3 penalty) / 4` per attempt at the object), so agents that judge
their own action alone learn never to lift. The team has to agree on the joint action
"all lift" once everybody has arrived, and to wait until then.

```python
from spnpolicy.envs import lift
env = lift.parallel_env(num_agents=3, penalty=0.5)
observations, infos = env.reset(seed=0)
```

**State** (`state()`, `[n + 1]` float32 in [0, 1]): each agent's distance / `distance`,
then the elapsed fraction of `max_steps`. An agent's **observation** is the state and its
one-hot index (`[2n + 1]`). **Infos** per agent: `team_reward`, `success` (the step was a
lift), `attempt` (some agent chose lift), `at_object` (how many agents are at the object
before the step).

:class:`LiftVecEnv` steps `num_envs` copies in batched numpy with auto-reset; copy e with
`seed=s` replays `parallel_env` reset with `reset(seed=s + e)` and, after each episode,
`reset()` without a seed. The ParallelEnv is a one-copy view of the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

from spnpolicy.envs.batched import copy_generators
from spnpolicy.envs.team_env import TeamEnv
from spnpolicy.envs.validation import (check_int, check_joint_action, check_joint_actions,
                                        check_number)

ACTION_NAMES = ("wait", "approach", "retreat", "lift")
NUM_ACTIONS = len(ACTION_NAMES)
WAIT, APPROACH, RETREAT, LIFT = range(NUM_ACTIONS)


@dataclass(frozen=True)
class LiftConfig:
    """The task's arguments, checked; one source of the defaults."""

    num_agents: int = 2
    penalty: float = 0.5
    required: int | None = None
    distance: int = 2
    max_steps: int = 12
    failure_prob: float = 0.0
    observe_failures: bool = False

    def __post_init__(self) -> None:
        check_int("num_agents", self.num_agents, 1)
        object.__setattr__(self, "penalty", check_number("penalty", self.penalty, 0))
        required = self.num_agents if self.required is None else self.required
        required = check_int("required", required, 1)
        if required > self.num_agents:
            raise ValueError(f"required must be at most num_agents={self.num_agents}, got "
                             f"{required}")
        object.__setattr__(self, "required", required)
        check_int("distance", self.distance, 0)
        check_int("max_steps", self.max_steps, 1)
        q = self.failure_prob
        if (isinstance(q, bool) or not isinstance(q, (int, float, np.number))
                or not 0.0 <= q < 1.0):
            raise ValueError(f"failure_prob must be a number in [0, 1), got {q!r}")
        object.__setattr__(self, "failure_prob", float(q))
        if not isinstance(self.observe_failures, (bool, np.bool_)):
            raise ValueError(f"observe_failures must be True or False, got "
                             f"{self.observe_failures!r}")

    @property
    def state_dim(self) -> int:
        return 2 * self.num_agents + 1 if self.observe_failures else self.num_agents + 1

    @property
    def obs_dim(self) -> int:
        return self.state_dim + self.num_agents


class LiftVecEnv:
    """`num_envs` copies of the lift task (arguments as in :class:`LiftConfig`).

    Attributes (updated in place): `distances` `[E, n]` int64 steps to the object,
    `elapsed` `[E]` int64 steps since each copy's last reset.
    """

    def __init__(self, num_envs: int, num_agents: int = LiftConfig.num_agents,
                 penalty: float = LiftConfig.penalty, required: int | None = None,
                 distance: int = LiftConfig.distance, max_steps: int = LiftConfig.max_steps,
                 failure_prob: float = LiftConfig.failure_prob,
                 observe_failures: bool = LiftConfig.observe_failures,
                 seed: int | None = None) -> None:
        self.num_envs = check_int("num_envs", num_envs, 1)
        self.config = LiftConfig(num_agents, penalty, required, distance, max_steps,
                                 failure_prob, observe_failures)
        self.num_agents = self.config.num_agents
        self.num_actions = NUM_ACTIONS
        self.state_dim, self.obs_dim = self.config.state_dim, self.config.obs_dim
        self._rngs = copy_generators(self.num_envs, seed)
        self.distances = np.zeros((self.num_envs, self.num_agents), dtype=np.int64)
        self.elapsed = np.zeros(self.num_envs, dtype=np.int64)
        self.stuck = np.zeros((self.num_envs, self.num_agents), dtype=bool)

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start an episode in every copy; observations `[E, n, obs_dim]`."""
        if seed is not None:
            self._rngs = copy_generators(self.num_envs, seed)
        self._reset_copies(np.arange(self.num_envs))
        return self.observations()

    def _reset_copies(self, copies: np.ndarray) -> None:
        for e in copies:
            self.distances[e] = self._rngs[e].integers(0, self.config.distance + 1,
                                                       size=self.num_agents)
        self.elapsed[copies] = 0
        self._draw_failures(copies)

    def _draw_failures(self, copies) -> None:
        """The announced failures of each copy's coming step."""
        if self.config.failure_prob > 0:
            for e in copies:
                self.stuck[e] = self._rngs[e].random(self.num_agents) < self.config.failure_prob

    def state(self) -> np.ndarray:
        """Global states `[E, state_dim]` float32: distances / distance, elapsed fraction,
        then (with `observe_failures`) the announced failure flags."""
        scale = max(self.config.distance, 1)
        parts = [self.distances / scale, (self.elapsed / self.config.max_steps)[:, None]]
        if self.config.observe_failures:
            parts.append(self.stuck)
        return np.concatenate(parts, axis=1).astype(np.float32)

    def observations(self) -> np.ndarray:
        """Per-agent observations `[E, n, state_dim + n]`: the state, then the one-hot
        index."""
        n = self.num_agents
        state = np.broadcast_to(self.state()[:, None, :], (self.num_envs, n, self.state_dim))
        index = np.broadcast_to(np.eye(n, dtype=np.float32), (self.num_envs, n, n))
        return np.concatenate([state, index], axis=2)

    def step(self, actions) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Apply joint actions `[E, n]`; returns `(obs, reward, terminated, truncated, info)`.

        `reward` `[E]` float32 is the team reward; `terminated` is a lift or the deadline,
        `truncated` always False; `info` holds `[E]` arrays `success`,
        `attempt`, `at_object` (before the step), `executed` `[E, n]` (the chosen actions,
        `wait` where the agent failed), and `final_observation` `[E, n, obs_dim]` /
        `final_state` `[E, state_dim]` (the step's last ones, before any auto-reset).
        `stuck` then holds the next step's announced failures.
        """
        actions = check_joint_actions(actions, self.num_envs, self.num_agents, NUM_ACTIONS)
        actions = np.where(self.stuck, WAIT, actions)
        cfg = self.config
        at_object = self.distances == 0
        lifting = actions == LIFT
        success = (at_object & lifting).sum(axis=1) >= cfg.required
        attempt = lifting.any(axis=1)
        reward = np.where(success, 1.0, np.where(attempt, -cfg.penalty, 0.0)).astype(np.float32)
        move = np.where(actions == APPROACH, -1, np.where(actions == RETREAT, 1, 0))
        self.distances = np.clip(self.distances + move, 0, cfg.distance)
        self.elapsed += 1
        terminated = success | (self.elapsed >= cfg.max_steps)
        truncated = np.zeros_like(success)
        self._draw_failures(np.flatnonzero(~(terminated | truncated)))
        info = {"success": success, "attempt": attempt, "at_object": at_object.sum(axis=1),
                "executed": actions, "final_observation": self.observations(),
                "final_state": self.state()}
        done = np.flatnonzero(terminated | truncated)
        if done.size:
            self._reset_copies(done)
        return self.observations(), reward, terminated, truncated, info


class LiftEnv(TeamEnv):
    """The lift task as a PettingZoo `ParallelEnv` (a one-copy view of :class:`LiftVecEnv`)."""

    metadata = {"name": "lift_v0", "render_modes": [], "is_parallelizable": True}

    def __init__(self, **kwargs: Any) -> None:
        self._vec = LiftVecEnv(1, **kwargs)
        self.config = config = self._vec.config
        super().__init__(config.num_agents,
                         lambda: spaces.Box(0.0, 1.0, (config.obs_dim,), np.float32),
                         lambda: spaces.Discrete(NUM_ACTIONS),
                         spaces.Box(0.0, 1.0, (config.state_dim,), np.float32))
        self._reset_pending = False

    def reset(self, seed: int | None = None, options: dict | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        self.agents = self.possible_agents[:]
        if seed is not None or not self._reset_pending:
            self._vec.reset(seed)  # else the last step's auto-reset drew this episode
        self._reset_pending = False
        return self._observe(self._vec.observations()[0]), {a: {} for a in self.agents}

    def step(self, actions: dict[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        joint = check_joint_action(actions, self.agents, NUM_ACTIONS)
        _, reward, terminated, truncated, info = self._vec.step(np.array([joint]))
        team, ended = float(reward[0]), bool(terminated[0] or truncated[0])
        step_info = {"team_reward": team, "success": bool(info["success"][0]),
                     "attempt": bool(info["attempt"][0]),
                     "at_object": int(info["at_object"][0])}
        observations = self._observe(info["final_observation"][0])
        self._final_state = info["final_state"][0]
        agents = self.agents
        infos = {a: dict(step_info) for a in agents}
        if self.config.failure_prob > 0:
            for i, a in enumerate(agents):
                infos[a]["executed_action"] = int(info["executed"][0, i])
                infos[a]["stuck"] = bool(self._vec.stuck[0, i]) and not ended
        if ended:
            self.agents = []
            self._reset_pending = True
        return (observations, {a: team for a in agents},
                {a: bool(terminated[0]) for a in agents},
                {a: bool(truncated[0]) for a in agents}, infos)

    @property
    def stuck(self) -> np.ndarray:
        """`[n]` bool: the agents announced to fail at the coming step."""
        return self._vec.stuck[0].copy()

    def state(self) -> np.ndarray:
        if not self.agents and hasattr(self, "_final_state"):
            return self._final_state.copy()
        return self._vec.state()[0]

    def _observe(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        return {agent: obs[i].copy() for i, agent in enumerate(self.possible_agents)}


def parallel_env(num_agents: int = LiftConfig.num_agents, penalty: float = LiftConfig.penalty,
                 required: int | None = None, distance: int = LiftConfig.distance,
                 max_steps: int = LiftConfig.max_steps,
                 failure_prob: float = LiftConfig.failure_prob,
                 observe_failures: bool = LiftConfig.observe_failures) -> LiftEnv:
    """Make the lift task; arguments as in the module docstring."""
    return LiftEnv(num_agents=num_agents, penalty=penalty, required=required,
                   distance=distance, max_steps=max_steps, failure_prob=failure_prob,
                   observe_failures=observe_failures)
