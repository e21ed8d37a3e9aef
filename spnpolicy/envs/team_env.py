"""`TeamEnv`: what the toolkit's own PettingZoo `ParallelEnv`s share.

Agents are `agent_0 ... agent_{n-1}`; every agent's spaces are made once, in `__init__`, and
returned by `observation_space(agent)` / `action_space(agent)`; there is nothing to draw
(`render()` returns None unless a subclass draws) and nothing to release.

```python
class MyEnv(TeamEnv):
    metadata = {"name": "my_env_v0", "render_modes": [], "is_parallelizable": True}

    def __init__(self) -> None:
        super().__init__(2, lambda: spaces.Box(0.0, 1.0, (3,), np.float32),
                         lambda: spaces.Discrete(4), spaces.Box(0.0, 1.0, (3,), np.float32))
```
"""

from __future__ import annotations

from collections.abc import Callable

from gymnasium import spaces
from pettingzoo import ParallelEnv


class TeamEnv(ParallelEnv):
    """A `ParallelEnv` of `num_agents` agents with cached spaces (see the module docstring).

    Args:
        num_agents: the team's size n.
        observation_space, action_space: make one agent's space; called once per agent, so
            that every agent owns its space (seeding one leaves the others alone).
        state_space: the space of `state()`.
        render_mode: stored as `render_mode`; a subclass that draws checks it first.
    """

    def __init__(self, num_agents: int, observation_space: Callable[[], spaces.Space],
                 action_space: Callable[[], spaces.Space], state_space: spaces.Space,
                 render_mode: str | None = None) -> None:
        self.render_mode = render_mode
        self.possible_agents = [f"agent_{i}" for i in range(num_agents)]
        self.agents: list[str] = []
        self._observation_spaces = {agent: observation_space() for agent in self.possible_agents}
        self._action_spaces = {agent: action_space() for agent in self.possible_agents}
        self.state_space = state_space

    def observation_space(self, agent: str) -> spaces.Space:
        return self._observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        return self._action_spaces[agent]

    def render(self) -> None:
        """Nothing to draw."""

    def close(self) -> None:
        """Nothing to release."""
