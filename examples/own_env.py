"""Your own environment: any PettingZoo ParallelEnv with discrete actions trains as is.

Run: .venv/bin/python examples/own_env.py          # trains spn-ac on it (3,000 env steps)

The same env from the command line, by file (or ``package.module:factory``) and name:

    .venv/bin/spnpolicy train spn-ac examples/own_env.py:rendezvous --total-steps 3000 \\
        --set learning_starts=500 --env-kw size=4 --out-dir runs/rendezvous

``Rendezvous``: two agents on a line of ``size`` cells each move left, stay or right; the
team reward is 1 on the step they stand on the same cell (which ends the episode), else 0.
Each agent observes both positions divided by ``size - 1`` (its own first); the global
state is both positions. ``infos[agent]["success"]`` says whether they met, which the
evaluation reports as ``success_rate``.
"""

from __future__ import annotations

import functools

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

import spnpolicy

MOVES = (-1, 0, 1)  # left, stay, right


class Rendezvous(ParallelEnv):
    metadata = {"name": "rendezvous_v0"}

    def __init__(self, size: int = 5, max_steps: int = 10) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 2:
            raise ValueError(f"size must be an int >= 2, got {size!r}")
        self.size, self.max_steps = size, max_steps
        self.possible_agents = ["agent_0", "agent_1"]
        self.agents: list[str] = []
        self._rng = np.random.default_rng()
        self._positions = np.zeros(2, dtype=np.int64)
        self._steps = 0

    @functools.cache
    def observation_space(self, agent: str) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (2,), np.float32)

    @functools.cache
    def action_space(self, agent: str) -> spaces.Discrete:
        return spaces.Discrete(len(MOVES))

    def state(self) -> np.ndarray:
        return (self._positions / (self.size - 1)).astype(np.float32)

    def _observations(self) -> dict[str, np.ndarray]:
        own_first = (self.state(), self.state()[::-1].copy())
        return dict(zip(self.possible_agents, own_first))

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.agents = list(self.possible_agents)
        self._positions = self._rng.choice(self.size, size=2, replace=False)
        self._steps = 0
        return self._observations(), {a: {} for a in self.agents}

    def step(self, actions: dict[str, int]):
        for i, agent in enumerate(self.possible_agents):
            move = MOVES[int(actions[agent])]
            self._positions[i] = np.clip(self._positions[i] + move, 0, self.size - 1)
        self._steps += 1
        met = bool(self._positions[0] == self._positions[1])
        truncated = self._steps >= self.max_steps and not met
        observations = self._observations()
        rewards = {a: float(met) for a in self.agents}
        terminations = {a: met for a in self.agents}
        truncations = {a: truncated for a in self.agents}
        infos = {a: {"success": met} for a in self.agents}
        if met or truncated:
            self.agents = []
        return observations, rewards, terminations, truncations, infos


def rendezvous(size: int = 5, max_steps: int = 10) -> Rendezvous:
    """The factory: keyword arguments are the env's (``--env-kw`` on the command line)."""
    return Rendezvous(size, max_steps)


if __name__ == "__main__":
    # A callable works directly; register_env gives it a name for bench suites and
    # spnpolicy.make_env in this process.
    spnpolicy.register_env("rendezvous", rendezvous)
    result = spnpolicy.train("spn-ac", "rendezvous", seed=0, env_kwargs=dict(size=4),
                             total_steps=3_000, learning_starts=500, eval_interval=1_000,
                             eval_episodes=32, verbose=True, progress=False)
    print("final greedy evaluation:", {k: round(v, 3) for k, v in result.eval.items()
                                       if k in ("return_mean", "success_rate")})
