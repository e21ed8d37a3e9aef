"""Evaluation: a fixed number of complete episodes with a given acting function.

Episodes are shared out among the copies before the run (copy ``e`` plays its first
``quota[e]`` episodes), so the result does not favour short episodes, which would finish
first if episodes were counted as they end.

:func:`evaluate_run` is a training run's evaluation at a step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from spnpolicy.training.runner import Runner
from spnpolicy.training.vec_env import VecEnv, make_vec_env

__all__ = ["EVAL_SEED_OFFSET", "evaluate", "evaluate_run"]

ActFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
EVAL_SEED_OFFSET = 1_000_003
"""Eval envs are seeded ``seed + EVAL_SEED_OFFSET``: they never replay training episodes."""


def evaluate(act: ActFn, envs: VecEnv, episodes: int, seed: int | None = None,
             max_steps: int = 1_000_000) -> dict[str, float]:
    """Play ``episodes`` episodes in ``envs``.

    Args:
        act: ``act(state [E, state_dim], obs [E, n, obs_dim]) -> actions [E, n]``; greedy or
            stochastic as the caller chooses.
        envs: the copies to play in (reset with ``seed`` first).
        episodes: number of episodes, shared out as evenly as possible among the copies.
        max_steps: safety limit on vectorised steps (RuntimeError when exceeded).

    Returns:
        ``return_mean``, ``return_std``, ``length_mean``, ``episodes``; ``success_rate``
        when the env reports a success flag; ``final_potential`` when the env has a
        potential (``envs.potential(states)``, e.g. coverage's ``infos["potential"]``): its
        mean over the episodes' last states, a progress measure on sparse tasks (coverage:
        minus the agents' summed distance to the goals under the best assignment / grid
        size, 0 when every goal is covered).
    """
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be an int >= 1, got {episodes!r}")
    quota = np.full(envs.num_envs, episodes // envs.num_envs)
    quota[: episodes % envs.num_envs] += 1
    runner = Runner(envs)
    runner.reset(seed=seed)
    kept: list = []
    last_states: list[np.ndarray] = []  # [state_dim] each, the kept episodes' last states
    played = np.zeros(envs.num_envs, dtype=np.int64)
    for _ in range(max_steps):
        if (played >= quota).all():
            break
        transition = runner.step(act(runner.state, runner.obs))
        for episode in runner.pop_episodes():
            if played[episode.env_index] < quota[episode.env_index]:
                kept.append(episode)
                last_states.append(transition.next_state[episode.env_index])
            played[episode.env_index] += 1
    else:
        raise RuntimeError(f"evaluation did not finish {episodes} episodes in {max_steps} steps")
    returns = np.array([ep.ret for ep in kept])
    result = {"return_mean": float(returns.mean()), "return_std": float(returns.std()),
              "length_mean": float(np.mean([ep.length for ep in kept])),
              "episodes": len(kept)}
    if envs.has_success:
        result["success_rate"] = float(np.mean([ep.success for ep in kept]))
    if callable(getattr(envs, "potential", None)):
        result["final_potential"] = float(np.mean(envs.potential(np.stack(last_states))))
    return result


def evaluate_run(env: str, env_kwargs: dict[str, Any], seed: int, step: int, episodes: int,
                 greedy: ActFn, stochastic: Callable[[torch.Generator], ActFn] | None = None,
                 device: str | torch.device = "cpu") -> dict[str, float]:
    """A training run's evaluation at ``step``: ``greedy`` in fresh fixed-seed eval envs.

    With ``stochastic`` (``generator -> act``), the sampling policy is evaluated too on the
    same episodes, its metrics prefixed ``stochastic_``; its generator is seeded from
    ``seed`` and ``step`` so an evaluation repeats exactly after a resume.
    """
    def run(act: ActFn) -> dict[str, float]:
        envs = make_vec_env(env, min(episodes, 64), seed=seed + EVAL_SEED_OFFSET, **env_kwargs)
        try:
            return evaluate(act, envs, episodes, seed=seed + EVAL_SEED_OFFSET)
        finally:
            envs.close()

    metrics = run(greedy)
    if stochastic is not None:
        generator = torch.Generator(device).manual_seed(seed * 1_000_003 + step)
        sampled = run(stochastic(generator))
        metrics |= {f"stochastic_{k}": v for k, v in sampled.items() if k != "episodes"}
    return metrics
