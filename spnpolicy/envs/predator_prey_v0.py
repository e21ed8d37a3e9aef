"""Predator-prey with punishment: the relative-overgeneralisation task of the DCG paper.

Böhmer, Kurin and Whiteson, "Deep Coordination Graphs" (ICML 2020). Predators must catch
prey in pairs; a predator that tries alone is punished, so a predator that judges its own
catch action against partners that act at random learns never to catch.

```python
from spnpolicy.envs import predator_prey_v0
env = predator_prey_v0.parallel_env(num_agents=8, num_prey=8, grid_size=10, obs_radius=2,
                                    punishment=2.0, capture_reward=10.0, max_steps=200,
                                    state="agents")
observations, infos = env.reset(seed=0)
```

**The paper's settings** (the defaults here; read from the paper's task description and
from the authors' published code and experiment configuration for it): 8 predators hunt 8
prey on a bounded 10 x 10 grid, at most one entity per cell; each predator sees the 5 x 5
cells around it (predators and prey); a prey is captured when at least two predators next
to it execute catch in the same step, which pays +10 and removes the prey and its catchers
from the grid; one predator alone attempting to catch a prey gives the punishment p <= 0;
prey move at random; episodes last 200 steps and end earlier when every prey is captured or
every predator is gone; no reward per time step or for collisions. The paper reports
p = 0, -1, -1.25 and -1.5 (Fig. 2a-d) and p = -2 (Fig. 3a-c, its topology, parameter
sharing and low-rank studies; also the experiment configuration's default). The largest,
p = -2, is also the largest at which DCG learned the task (its fully connected graph, in
Fig. 3). Here `punishment` is the magnitude, p = -punishment; the default is 2.0.

Deviations, because this toolkit has no action masks: the paper makes a move into an
occupied cell or off the grid, and catch with no prey next to the predator, unavailable;
here such actions leave the predator where it is, with no reward and no punishment
(what the authors' step function does when given them). The paper's observation has a
third channel for a second prey kind (hares), empty in this task; it is left out. The
paper's global state is the grid alone (`state="grid"`), which does not say which predator
stands where: the paper's learners act on their own observations and use the state only to
mix values. A policy or critic that acts from the global state cannot tell the predators
apart in it, so the default state (`state="agents"`) appends each predator's window and
cell in agent order.

| | |
|---|---|
| Agents | `agent_0` ... `agent_{n-1}`, the predators |
| Actions | `Discrete(6)`: 0 up (row-1), 1 down (row+1), 2 left (col-1), 3 right, 4 stay, 5 catch |
| Observation | `Box(0, 1, (2 w^2,), float32)`, `w = 2 obs_radius + 1` (50 by default) |
| State | `Box(0, 1, (state_dim,), float32)`: `2 grid_size^2 + n (2 w^2 + 2 grid_size)` (760 by default); `2 grid_size^2` with `state="grid"` |

**A step.** (1) Predators take turns in a uniformly random order: each active predator with
a move action moves one cell unless the target is off the grid or holds an active predator
or a live prey (cells free by then count: an earlier mover may have vacated it). (2) Live
prey take turns in a uniformly random order. On prey j's turn, the active predators
4-adjacent to it that chose catch are its catchers: two or more capture it (+capture_reward;
the prey and every one of those catchers leave the grid at once, so they cannot catch a
later prey); exactly one adds -punishment (once per such prey, so one step can be punished
more than once). A prey that was not captured moves to one of its free 4-neighbour cells,
chosen uniformly (prey never rest by choice), and stays only when all are blocked by walls,
active predators or live prey. Predators that left the grid stay in `agents` until the
episode ends: their actions do nothing, they are not seen, and they observe zeros.

Each capture removes at least two predators, so an episode captures at most
`num_agents // 2` prey: with the paper's 8 and 8 at most 4 (a return of at most 40), the
episode then ending with every predator gone, and `success` never holds.

**Observation** of predator i (float32, 0/1): its `[2, w, w]` window flattened (channel,
row, col), centred on its cell: channel 0 active predators (itself at the centre), channel
1 live prey; cells off the grid read 0; all zeros once the predator left the grid.
**Global state** (`state()`): the `[2, grid_size, grid_size]` grid with the same channels,
flattened; then (`state="agents"`, the default), per predator in agent order, its
observation and the one-hot row `[grid_size]` and column `[grid_size]` of its cell (all
zeros once it has left the grid).

**Rewards**: a team reward, the same for every agent: the sum over the step of
`capture_reward` per capture and `-punishment` per lone attempt. **Termination** when every
prey is captured or every predator has left the grid; truncation after `max_steps` steps
(a step that terminates is not also marked truncated).

**Infos** per agent: `success` (every prey has been captured), `captures` (prey captured
since reset), `active` (this predator is still on the grid), and after each step
`team_reward` (to be counted once per step in returns, not summed over agents).

`env.unwrapped.world` is a `predator_prey_core.World` with one copy: `predators [1, n, 2]`,
`active [1, n]`, `prey [1, m, 2]`, `alive [1, m]`.

**Seeding.** `reset(seed=s)` makes a fresh `numpy.random.default_rng(s)`; a later `reset()`
without a seed continues that generator. The environment draws only through
`predator_prey_core.sample_layout` and `draw_step`, which `PredatorPreyVecEnv` shares.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from spnpolicy.envs import predator_prey_core as core
from spnpolicy.envs.predator_prey_core import PredatorPreyConfig as Config
from spnpolicy.envs.team_env import TeamEnv
from spnpolicy.envs.validation import check_joint_action


class PredatorPreyEnv(TeamEnv):
    """Predator-prey with punishment as a PettingZoo `ParallelEnv` (see the module
    docstring)."""

    metadata = {"name": "predator_prey_v0", "render_modes": [], "is_parallelizable": True}

    def __init__(self, config: core.PredatorPreyConfig) -> None:
        super().__init__(config.num_agents,
                         lambda: spaces.Box(0.0, 1.0, (config.obs_dim,), np.float32),
                         lambda: spaces.Discrete(core.NUM_ACTIONS),
                         spaces.Box(0.0, 1.0, (config.state_dim,), np.float32))
        self.config = config
        self._rng = np.random.default_rng()
        self.world = core.World.empty(1, config)
        self.elapsed = 0

    def reset(self, seed: int | None = None, options: dict | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.world = core.World.empty(1, self.config)
        self.world.predators[0], self.world.prey[0] = core.sample_layout(self._rng, self.config)
        self.elapsed = 0
        self.agents = self.possible_agents[:]
        return self._observe(), self._infos()

    def step(self, actions: dict[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        joint = np.array([check_joint_action(actions, self.agents, core.NUM_ACTIONS)])
        uniforms = core.draw_step(self._rng, self.config)[None]
        self.world, outcome = core.step(self.world, joint, uniforms, self.config)
        self.elapsed += 1
        reward = float(outcome.reward[0])
        terminated = bool(outcome.terminated[0])
        truncated = self.elapsed >= self.config.max_steps and not terminated
        agents = self.agents
        observations, infos = self._observe(), self._infos(reward)
        if terminated or truncated:
            self.agents = []
        return (observations, dict.fromkeys(agents, reward),
                dict.fromkeys(agents, terminated), dict.fromkeys(agents, truncated), infos)

    def state(self) -> np.ndarray:
        return core.global_state(self.world, self.config)[0]

    def _observe(self) -> dict[str, np.ndarray]:
        obs = core.observations(self.world, self.config)[0]
        return {agent: obs[i] for i, agent in enumerate(self.possible_agents)}

    def _infos(self, reward: float | None = None) -> dict[str, dict[str, Any]]:
        """Per-agent infos; `team_reward` only after a step (`reward` given)."""
        shared: dict[str, Any] = {"success": not self.world.alive[0].any(),
                                  "captures": int(self.world.captures()[0])}
        if reward is not None:
            shared["team_reward"] = reward
        return {agent: shared | {"active": bool(self.world.active[0, i])}
                for i, agent in enumerate(self.possible_agents)}


def parallel_env(num_agents: int = Config.num_agents, num_prey: int = Config.num_prey,
                 grid_size: int = Config.grid_size, obs_radius: int = Config.obs_radius,
                 punishment: float = Config.punishment,
                 capture_reward: float = Config.capture_reward,
                 max_steps: int = Config.max_steps, state: str = Config.state) -> PredatorPreyEnv:
    """Make the predator-prey gridworld; arguments as in the module docstring.

    Raises ValueError naming the argument when one is out of range (fewer than 2 predators,
    a grid too small for every entity, a negative `punishment`, ...).
    """
    config = Config(num_agents, num_prey, grid_size, obs_radius, punishment, capture_reward,
                    max_steps, state)
    return PredatorPreyEnv(config)
