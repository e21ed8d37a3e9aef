"""Level-based foraging (Albrecht, Christianos and Schäfer, "Multi-Agent Reinforcement
Learning: Foundations and Modern Approaches", 2024) from `lbforaging` (a Gymnasium env) as a
`ParallelEnv`.

Needs the optional extra: `pip install 'spnpolicy[lbf]'`.

```python
from spnpolicy.envs import lbf
env = lbf.parallel_env("Foraging-8x8-2p-3f-v3")
```

Ids are lbforaging's registered ones, `Foraging[-2s]-{S}x{S}-{P}p-{F}f[-coop]-v3` with grid
side S in 5..19, P in 2..9 players and F in 1..4 food items (`-2s`: sight 2, `-coop`: every
food needs all players). Keyword arguments override lbforaging's (`max_episode_steps`,
`sight`, `force_coop`, ...).

| | |
|---|---|
| Agents | `agent_0` ... `agent_{P-1}` (lbforaging's player order) |
| Actions | `Discrete(6)`: 0 none, 1 north, 2 south, 3 west, 4 east, 5 load |
| Observation | lbforaging's vector: `(x, y, level)` per food, then per player (self first) |
| State | the agents' observations concatenated in agent order |

Rewards are lbforaging's per-agent (normalised) rewards; with `common_reward=True` every agent
receives their sum (the book's common-reward task). `infos[agent]["team_reward"]` is always
that sum, to be counted once per step. The episode terminates when all food is collected and
is truncated after `max_episode_steps` (lbforaging reports both as one `done`).
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from spnpolicy.envs.validation import check_joint_action


def _foraging_class() -> type:
    try:
        import lbforaging  # noqa: F401  (registers the Foraging-* ids with gymnasium)
        from lbforaging.foraging import ForagingEnv
    except ModuleNotFoundError as error:
        if error.name is None or not error.name.startswith("lbforaging"):
            raise
        raise ImportError("lbf/... environments need the lbforaging package: "
                          "pip install 'spnpolicy[lbf]'") from None
    return ForagingEnv


class LBFParallelEnv(ParallelEnv):
    """One lbforaging task as a PettingZoo `ParallelEnv` (see the module docstring).

    `foraging` is the wrapped `lbforaging.foraging.ForagingEnv`.
    """

    metadata = {"name": "lbf_v0", "render_modes": [], "is_parallelizable": True}

    def __init__(self, env_id: str, common_reward: bool = False, **kwargs: Any) -> None:
        foraging = _foraging_class()
        valid = tuple(name for name in inspect.signature(foraging.__init__).parameters
                      if name not in ("self", "render_mode"))
        unknown = sorted(set(kwargs) - set(valid))
        if unknown:
            raise ValueError(f"unknown argument(s) {unknown} for lbf/{env_id}; valid: "
                             f"{('common_reward', *valid)}")
        try:
            spec = gymnasium.spec(env_id)
        except gymnasium.error.Error as error:
            raise ValueError(f"env_id must be a registered lbforaging id such as "
                             f"'Foraging-8x8-2p-3f-v3', got {env_id!r}: {error}") from None
        if spec.entry_point != "lbforaging.foraging:ForagingEnv":
            raise ValueError(f"env_id must name an lbforaging environment, got {env_id!r} "
                             f"(entry point {spec.entry_point!r})")
        self.foraging = foraging(**{**spec.kwargs, **kwargs})
        self.env_id = env_id
        self.common_reward = bool(common_reward)
        self.render_mode = None
        self.possible_agents = [f"agent_{i}" for i in range(self.foraging.n_agents)]
        self.agents: list[str] = []
        boxes = self.foraging.observation_space.spaces
        # lbforaging shares one space object between players; each agent gets its own so
        # that seeding one agent's action space leaves the others alone.
        self._observation_spaces = {agent: copy.deepcopy(boxes[i])
                                    for i, agent in enumerate(self.possible_agents)}
        self._action_spaces = {agent: copy.deepcopy(self.foraging.action_space[i])
                               for i, agent in enumerate(self.possible_agents)}
        self.state_space = spaces.Box(np.concatenate([box.low for box in boxes]),
                                      np.concatenate([box.high for box in boxes]),
                                      dtype=np.float32)
        self._observations: tuple[np.ndarray, ...] = ()

    def observation_space(self, agent: str) -> spaces.Box:
        return self._observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Discrete:
        return self._action_spaces[agent]

    def reset(self, seed: int | None = None, options: dict | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        # lbforaging places each player away from the others' positions, including the
        # previous episode's positions of those not yet placed: cleared first, one seed
        # gives one start whatever ran before (and a resumed run replays its episodes)
        for player in self.foraging.players:
            player.position = None
        observations, _ = self.foraging.reset(seed=seed, options=options)
        self.agents = self.possible_agents[:]
        return self._observe(observations), {agent: {} for agent in self.agents}

    def step(self, actions: dict[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        joint = check_joint_action(actions, self.agents, self.foraging.action_space[0].n)
        observations, rewards, done, _, _ = self.foraging.step(tuple(joint))
        team = float(sum(rewards))
        terminated = bool(self.foraging.field.sum() == 0)
        truncated = bool(done) and not terminated
        if self.common_reward:
            rewards = [team] * len(rewards)
        agents = self.agents
        if terminated or truncated:
            self.agents = []
        return (self._observe(observations),
                {agent: float(r) for agent, r in zip(agents, rewards, strict=True)},
                dict.fromkeys(agents, terminated), dict.fromkeys(agents, truncated),
                {agent: {"team_reward": team} for agent in agents})

    def state(self) -> np.ndarray:
        if not self._observations:
            raise RuntimeError("call reset() before state()")
        return np.concatenate(self._observations)

    def render(self) -> None:
        """Not supported: lbforaging draws through a pyglet window."""

    def close(self) -> None:
        self.foraging.close()

    def _observe(self, observations: tuple[np.ndarray, ...]) -> dict[str, np.ndarray]:
        self._observations = tuple(np.asarray(o, dtype=np.float32) for o in observations)
        return dict(zip(self.possible_agents, self._observations, strict=True))


def parallel_env(env_id: str, common_reward: bool = False, **kwargs: Any) -> LBFParallelEnv:
    """Make lbforaging's `env_id` as a `ParallelEnv`; see the module docstring."""
    return LBFParallelEnv(env_id, common_reward, **kwargs)
