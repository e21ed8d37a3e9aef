"""`VmasVecEnv`: `E` copies of a VMAS task simulated as one batch in torch (on the CPU),
behind the batched-env interface of the toolkit (numpy in and out, auto-reset, snapshots).

```python
envs = VmasVecEnv(8, "dispersion", seed=0, n_agents=4)
obs = envs.reset()                           # [E, n, obs_dim] float32
obs, reward, terminated, truncated, info = envs.step(np.zeros((8, 4), dtype=int))
```

Randomness: VMAS draws a scenario's random layout from the torch generator it swaps in
around each call (`Environment.vmas_random_state`). Each copy here owns such a generator
state: copy e of an env made with `seed=s` draws from `torch.Generator().manual_seed(s + e)`,
so it replays the one-copy env reset with `reset(seed=s + e)` and, after each episode,
`reset()` without a seed. The three scenarios draw only when a copy resets (a step draws
nothing), which is what makes this exact.

Snapshots: a copy's future is fixed by its generator state at the start of its episode and
the joint actions since; :meth:`VmasVecEnv.restore` resets each copy from that state and
replays its actions (the copies' episodes end aligned: a copy whose episode is shorter is
reset later in the replay).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from spnpolicy.envs.validation import check_int, check_joint_actions
from spnpolicy.envs.vmas_tasks import MOVES, MOVES_DIAGONAL, TASKS, VmasTask

__all__ = ["VmasConfig", "VmasVecEnv", "import_vmas"]


def import_vmas(task: str):
    """The ``vmas`` package; ImportError saying how to install it otherwise."""
    try:
        return importlib.import_module("vmas")
    except ModuleNotFoundError as error:
        if error.name is None or not error.name.startswith("vmas"):
            raise
        raise ImportError(f"vmas/{task} needs the vmas package: "
                          "pip install 'spnpolicy[vmas]'") from None


@dataclass(frozen=True)
class VmasConfig:
    """A VMAS task's arguments, checked; one source of the defaults."""

    task: str
    """One of ``TASKS``: dispersion, navigation, transport."""
    n_agents: int = 4
    """The team's size."""
    max_steps: int = 100
    """Steps after which an episode is truncated (a time limit: not in the state)."""
    diagonal_moves: bool = False
    """9 moves (the 5 and the diagonals) instead of noop, left, right, down, up."""
    scenario_kwargs: dict[str, Any] = field(default_factory=dict)
    """The scenario's other arguments (``VmasTask.arguments``), passed to VMAS."""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {tuple(TASKS)}, got {self.task!r}")
        check_int("n_agents", self.n_agents, 1)
        check_int("max_steps", self.max_steps, 1)
        if not isinstance(self.diagonal_moves, (bool, np.bool_)):
            raise ValueError(f"diagonal_moves must be True or False, got "
                             f"{self.diagonal_moves!r}")
        valid = ("n_agents", "max_steps", "diagonal_moves", *self.spec.arguments)
        unknown = sorted(set(self.scenario_kwargs) - set(self.spec.arguments))
        if unknown:
            raise ValueError(f"unknown argument(s) {unknown} for vmas/{self.task}; valid: "
                             f"{valid}")

    @classmethod
    def from_kwargs(cls, task: str, kwargs: dict[str, Any]) -> VmasConfig:
        """The config of ``task`` with keyword arguments ``kwargs``: this class's fields,
        the rest the scenario's."""
        own = ("n_agents", "max_steps", "diagonal_moves")
        return cls(task, **{k: v for k, v in kwargs.items() if k in own},
                   scenario_kwargs={k: v for k, v in kwargs.items() if k not in own})

    @property
    def spec(self) -> VmasTask:
        return TASKS[self.task]

    @property
    def moves(self) -> torch.Tensor:
        """``[k, 2]`` per-axis choices of each action (see ``vmas_tasks``)."""
        return MOVES_DIAGONAL if self.diagonal_moves else MOVES


def _fresh_state(seed: int | None) -> torch.Tensor:
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator.get_state()


class VmasVecEnv:
    """``num_envs`` copies of the VMAS task ``task`` (arguments as in :class:`VmasConfig`).

    Attributes: ``num_agents``, ``num_actions`` (5, or 9 with ``diagonal_moves``),
    ``obs_dim``, ``state_dim``, ``config``; ``vmas_env``, the VMAS ``Environment``.
    ValueError naming the argument for a bad one (VMAS's own refusals included);
    ImportError when vmas is not installed.
    """

    def __init__(self, num_envs: int, task: str, seed: int | None = None,
                 **kwargs: Any) -> None:
        self.num_envs = check_int("num_envs", num_envs, 1)
        self.config = config = VmasConfig.from_kwargs(task, kwargs)
        vmas = import_vmas(task)
        self._shared = vmas.simulator.environment.Environment.vmas_random_state
        self._quiet = _fresh_state(0)  # steps run with it: they draw nothing
        try:
            self.vmas_env = self._with_state(self._quiet, lambda: vmas.make_env(
                config.spec.scenario, num_envs=self.num_envs, device="cpu",
                continuous_actions=False, multidiscrete_actions=True,
                terminated_truncated=True, max_steps=config.max_steps,
                n_agents=config.n_agents, **config.scenario_kwargs))[0]
        except AssertionError as error:
            raise ValueError(f"vmas/{task} refused the arguments {kwargs}: {error}") from None
        agents = self.vmas_env.agents
        if any(list(agent.discrete_action_nvec) != [3, 3] for agent in agents):
            raise ValueError(f"vmas/{task}: every agent needs VMAS's 3 x 3 discrete moves")
        self.num_agents, self.num_actions = len(agents), len(config.moves)
        self.obs_dim = self._observations().shape[2]
        self.state_dim = config.spec.state(self.vmas_env).shape[1]
        self._rngs = self._generators(seed)
        self._starts = list(self._rngs)   # each copy's generator state at its episode's start
        self._history: list[list[list[int]]] = [[] for _ in range(self.num_envs)]
        self._state: np.ndarray | None = None

    # -- randomness ------------------------------------------------------------------------

    def _generators(self, seed: int | None) -> list[torch.Tensor]:
        """Copy e's generator state: seeded ``seed + e``, or fresh entropy without ``seed``."""
        if seed is None:
            return [_fresh_state(None) for _ in range(self.num_envs)]
        seed = check_int("seed", seed, 0)
        return [_fresh_state(seed + e) for e in range(self.num_envs)]

    def _with_state(self, state: torch.Tensor, call: Callable[[], Any]
                    ) -> tuple[Any, torch.Tensor]:
        """``call()`` with VMAS drawing from the torch generator ``state``; returns its result
        and the generator's state after it. The state VMAS held before is put back."""
        outer = self._shared[0]
        self._shared[0] = state
        try:
            return call(), self._shared[0]
        finally:
            self._shared[0] = outer

    def _reset_copy(self, e: int, start: torch.Tensor) -> None:
        self._starts[e] = start
        self._rngs[e] = self._with_state(start, lambda: self.vmas_env.reset_at(
            e, return_observations=False))[1]
        self._history[e] = []

    # -- views -----------------------------------------------------------------------------

    def _observations(self) -> np.ndarray:
        obs, = self._with_state(self._quiet, lambda: self.vmas_env.get_from_scenario(
            get_observations=True, get_rewards=False, get_infos=False, get_dones=False))[0]
        return torch.stack(obs, dim=1).to(torch.float32).numpy()

    def _global_state(self) -> np.ndarray:
        return self.config.spec.state(self.vmas_env).to(torch.float32).numpy()

    def state(self) -> np.ndarray:
        """Global states ``[E, state_dim]`` float32 (``VmasTask.state_layout``)."""
        if self._state is None:
            raise RuntimeError("call reset() before step() or state()")
        return self._state.copy()

    # -- episodes --------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start an episode in every copy (with ``seed``: copy e from ``seed + e``; without,
        each copy's generator goes on); observations ``[E, n, obs_dim]``."""
        if seed is not None:
            self._rngs = self._generators(seed)
        for e in range(self.num_envs):
            self._reset_copy(e, self._rngs[e])
        self._state = self._global_state()
        return self._observations()

    def step(self, actions) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Apply joint actions ``[E, n]``; returns ``(obs, reward, terminated, truncated,
        info)``, copies whose episode ended already reset (``obs`` their first one).

        ``reward`` ``[E]`` float32 is the team reward, the mean of the agents' VMAS rewards;
        ``terminated`` the scenario's success (its ``done()``), ``truncated`` the time limit
        without it. ``info`` holds ``success`` (= ``terminated``), ``agent_rewards``
        ``[E, n]``, and ``final_observation`` ``[E, n, obs_dim]`` / ``final_state``
        ``[E, state_dim]`` (the step's last ones, before any reset).
        """
        self.state()  # raises before the first reset
        actions = check_joint_actions(actions, self.num_envs, self.num_agents, self.num_actions)
        final_obs, rewards, terminated, truncated = self._advance(actions)
        info = {"success": terminated, "agent_rewards": rewards,
                "final_observation": final_obs, "final_state": self._global_state()}
        for e, joint in enumerate(actions.tolist()):
            self._history[e].append(joint)
        ended = np.flatnonzero(terminated | truncated)
        for e in ended:
            self._reset_copy(int(e), self._rngs[e])
        self._state = self._global_state() if ended.size else info["final_state"].copy()
        obs = self._observations() if ended.size else final_obs.copy()
        return obs, rewards.mean(axis=1, dtype=np.float32), terminated, truncated, info

    def _advance(self, actions: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One VMAS step of joint actions ``[E, n]``: observations ``[E, n, obs_dim]`` and
        ``rewards [E, n]`` float32, ``terminated``, ``truncated`` ``[E]`` bool."""
        moves = self.config.moves[torch.as_tensor(actions)]            # [E, n, 2]
        step = lambda: self.vmas_env.step(list(moves.unbind(dim=1)))  # noqa: E731
        obs, rewards, terminated, truncated, _ = self._with_state(self._quiet, step)[0]
        terminated = terminated.numpy().copy()
        return (torch.stack(obs, dim=1).to(torch.float32).numpy(),
                torch.stack(rewards, dim=1).to(torch.float32).numpy(), terminated,
                truncated.numpy() & ~terminated)

    # -- snapshots -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Every copy's generator state at its episode's start and now (``[E, L]`` uint8)
        and its episode's joint actions; :meth:`restore` continues from it exactly."""
        self.state()
        return {"starts": torch.stack(self._starts), "rngs": torch.stack(self._rngs),
                "history": [[list(joint) for joint in h] for h in self._history]}

    def restore(self, snapshot: dict[str, Any]) -> np.ndarray:
        """Continue from a :meth:`snapshot` of an env with the same settings and
        ``num_envs``; returns the observations ``[E, n, obs_dim]`` at that point."""
        starts, rngs, history = snapshot["starts"], snapshot["rngs"], snapshot["history"]
        if len(starts) != self.num_envs or len(rngs) != self.num_envs or \
                len(history) != self.num_envs:
            raise ValueError(f"snapshot does not fit this env: it has "
                             f"{len(history)} copies, this env {self.num_envs}")
        self._replay([[list(joint) for joint in h] for h in history],
                     [state.clone() for state in starts])
        self._rngs = [state.clone() for state in rngs]
        self._state = self._global_state()
        return self._observations()

    def _replay(self, history: list[list[list[int]]], starts: list[torch.Tensor]) -> None:
        """Reset copy e from ``starts[e]`` and step its ``history[e]``, the copies' last
        steps together (a copy takes noops until its episode starts)."""
        length = max(len(h) for h in history)
        begins = [length - len(h) for h in history]
        for t in range(length + 1):
            for e in np.flatnonzero(np.asarray(begins) == t):
                self._reset_copy(int(e), starts[e])
            if t < length:
                self._advance(np.array([h[t - b] if t >= b else [0] * self.num_agents
                                        for h, b in zip(history, begins)], dtype=np.int64))
        self._history = history

    def close(self) -> None:
        """Nothing to release."""
