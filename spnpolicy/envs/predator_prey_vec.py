"""`PredatorPreyVecEnv`: `num_envs` predator-prey gridworlds stepped together in batched numpy.

The rules are `predator_prey_v0`'s (shared through `predator_prey_core`); this class adds
batching and auto-reset. Every predator acts every step (one that left the grid does
nothing), so arrays have a fixed `[E, n, ...]` shape.

```python
env = PredatorPreyVecEnv(num_envs=16, seed=0)
obs = env.reset()                                   # [E, n, 50] float32
actions = np.random.default_rng(0).integers(0, 6, size=(16, 8))
obs, reward, terminated, truncated, info = env.step(actions)
```

A step runs the rule's turns (predators one at a time, then prey one at a time, in random
orders) in lockstep over the copies, each turn a few array operations on `[E]` rows; the
only loops over copies are the random draws, since each copy owns its generator.

**Seeding.** Copy e owns `numpy.random.default_rng(seed + e)`, so with `seed=s` it replays
exactly `predator_prey_v0.parallel_env(...)` reset with `reset(seed=s + e)` and, after each
of its episodes ends, reset again with `reset()` (no seed). `seed=None` gives every copy a
generator with fresh OS entropy.

**Auto-reset.** When copy e terminates or is truncated, `step` resets it at once: the
returned `obs[e]` is the first observation of its next episode, while
`info["final_observation"][e]` and `info["final_state"][e]` hold the last observation and
state of the episode that ended. `reward`, `terminated`, `truncated`, `success` and
`captures` describe the step just taken, before any reset.
"""

from __future__ import annotations

import numpy as np

from spnpolicy.envs import predator_prey_core as core
from spnpolicy.envs.predator_prey_core import PredatorPreyConfig as Config
from spnpolicy.envs.batched import BatchedEnv, generator_states, restore_generators
from spnpolicy.envs.validation import check_int


class PredatorPreyVecEnv(BatchedEnv):
    """`num_envs` copies of the predator-prey gridworld; other arguments as in
    `predator_prey_v0`.

    Attributes (updated by `reset` and `step`):
        world: a `predator_prey_core.World` of `E` copies.
        elapsed: `[E]` int64 steps since each copy's last reset.

    `step` actions are `[E, n]` integers in [0, 6); its info holds, beside
    `final_observation` and `final_state`, `success [E]` bool (every prey captured) and
    `captures [E]` int64 (prey captured in the episode so far), of the state the step
    reached, before any reset.
    """

    def __init__(self, num_envs: int, num_agents: int = Config.num_agents,
                 num_prey: int = Config.num_prey, grid_size: int = Config.grid_size,
                 obs_radius: int = Config.obs_radius, punishment: float = Config.punishment,
                 capture_reward: float = Config.capture_reward,
                 max_steps: int = Config.max_steps, state: str = Config.state,
                 seed: int | None = None) -> None:
        num_envs = check_int("num_envs", num_envs, 1)
        config = Config(num_agents, num_prey, grid_size, obs_radius, punishment,
                        capture_reward, max_steps, state)
        super().__init__(num_envs, config, core.NUM_ACTIONS, seed)
        self.world = core.World.empty(num_envs, config)

    def snapshot(self) -> dict:
        """Everything that determines the future: the world, step counters and every copy's
        generator state, as JSON-friendly lists; :meth:`restore` continues from it exactly."""
        self._require_state()
        world = self.world
        return {"predators": world.predators.tolist(), "active": world.active.tolist(),
                "prey": world.prey.tolist(), "alive": world.alive.tolist(),
                "elapsed": self.elapsed.tolist(),
                "rngs": generator_states(self._rngs)}

    def restore(self, snapshot: dict) -> np.ndarray:
        """Continue from a :meth:`snapshot` (of an env with the same settings and
        `num_envs`); returns the observations `[E, n, obs_dim]` at that point."""
        world = core.World(np.asarray(snapshot["predators"], dtype=np.int64),
                           np.asarray(snapshot["active"], dtype=bool),
                           np.asarray(snapshot["prey"], dtype=np.int64),
                           np.asarray(snapshot["alive"], dtype=bool))
        elapsed = np.asarray(snapshot["elapsed"], dtype=np.int64)
        expected = core.World.empty(self.num_envs, self.config)
        shapes = [a.shape for a in (world.predators, world.active, world.prey, world.alive)]
        if (shapes != [a.shape for a in (expected.predators, expected.active, expected.prey,
                                         expected.alive)]
                or elapsed.shape != (self.num_envs,) or len(snapshot["rngs"]) != self.num_envs):
            raise ValueError(f"snapshot does not fit this env (num_envs={self.num_envs}, "
                             f"num_agents={self.num_agents}, num_prey={self.config.num_prey}): "
                             f"predators, active, prey, alive {[list(s) for s in shapes]}, "
                             f"elapsed {list(elapsed.shape)}")
        self._rngs = restore_generators(snapshot["rngs"])
        self.world, self.elapsed = world, elapsed
        self._state, obs = self._observe(slice(None))
        return obs

    def _advance(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                     dict[str, np.ndarray]]:
        uniforms = np.stack([core.draw_step(rng, self.config) for rng in self._rngs])
        self.world, outcome = core.step(self.world, actions, uniforms, self.config)
        info = {"success": ~self.world.alive.any(axis=-1), "captures": self.world.captures()}
        return outcome.reward, outcome.terminated, info

    def _draw_layouts(self, copies: np.ndarray) -> None:
        world = self.world
        for e in copies.tolist():
            world.predators[e], world.prey[e] = core.sample_layout(self._rngs[e], self.config)
        world.active[copies] = True
        world.alive[copies] = True

    def _observe(self, copies: slice | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        world = self.world
        world = core.World(world.predators[copies], world.active[copies], world.prey[copies],
                           world.alive[copies])
        return core.global_state(world, self.config), core.observations(world, self.config)
