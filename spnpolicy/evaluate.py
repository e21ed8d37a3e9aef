"""``spnpolicy evaluate``: a saved run's agent, greedy, beside uniform random joint actions.

```python
from spnpolicy.evaluate import evaluate_saved_run
record = evaluate_saved_run("runs/cov", episodes=20)
record["greedy"]["return_mean"] - record["uniform_random"]["return_mean"]
```
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from spnpolicy.envs.validation import check_int
from spnpolicy.inference import load_agent, load_run_config
from spnpolicy.training.evaluation import evaluate
from spnpolicy.training.vec_env import make_vec_env

__all__ = ["SAVED_RUN_EPISODES", "SAVED_RUN_SEED", "evaluate_saved_run"]

SAVED_RUN_EPISODES = 100
"""Episodes :func:`evaluate_saved_run` plays per policy unless told otherwise."""
SAVED_RUN_SEED = 12_345
"""The episode seed of :func:`evaluate_saved_run` unless told otherwise."""


def evaluate_saved_run(path: str | os.PathLike, episodes: int = SAVED_RUN_EPISODES,
                       seed: int = SAVED_RUN_SEED, stochastic: bool = False,
                       acting: str | None = None) -> dict[str, Any]:
    """A saved run's agent, greedy, beside uniform random joint actions on the same episodes.

    Loads the agent of the run directory (or checkpoint file in one) at ``path`` with
    :func:`spnpolicy.inference.load_agent` and plays ``episodes`` episodes of the run's env
    and env arguments, seeded with ``seed``: greedily, then the same episodes with uniform
    random joint actions (drawn from ``seed``), and with ``stochastic`` the same episodes
    with the agent's sampling policy (its ``act(..., deterministic=False)``: a circuit
    policy's samples, a Q-learner's epsilon-greedy actions; generator seeded with ``seed``).
    ``acting`` (spn-ac runs: ``"policy"`` or ``"critics"``) overrides the run's own, as in
    :func:`~spnpolicy.inference.load_agent`.

    Returns:
        ``run`` (``str(path)``), ``algo``, ``env``, ``env_kwargs``, ``episodes``, ``seed``,
        ``acting`` (spn-ac runs: the one played),
        and :func:`evaluate`'s metrics of each policy under ``greedy``, ``uniform_random``
        (and ``stochastic``): ``return_mean``, ``return_std``, ``length_mean``,
        ``episodes``, ``success_rate`` where the env reports success, ``final_potential``
        where it has a potential (coverage: 0 when every goal is covered, below 0 otherwise).

    Raises ValueError naming ``path`` when it holds no run or no checkpoint, or its agent
    cannot be loaded; ValueError for ``episodes < 1``, a negative ``seed``, or an
    ``acting`` that :func:`~spnpolicy.inference.load_agent` refuses.

    ```python
    record = evaluate_saved_run("runs/cov", episodes=20)
    record["greedy"]["return_mean"] - record["uniform_random"]["return_mean"]
    ```
    """
    episodes = check_int("episodes", episodes, 1)
    seed = check_int("seed", seed, 0)
    saved = load_run_config(path)
    agent = load_agent(path, acting)
    reads_obs = getattr(agent, "needs_obs", False)
    generator = torch.Generator(next(agent.parameters()).device).manual_seed(seed)

    def greedy(state: np.ndarray, obs: np.ndarray) -> np.ndarray:
        return np.asarray(agent.act(obs if reads_obs else state))

    def sampled(state: np.ndarray, obs: np.ndarray) -> np.ndarray:
        return np.asarray(agent.act(obs if reads_obs else state, deterministic=False,
                                    generator=generator))

    envs = make_vec_env(saved["env"], min(episodes, 64), seed=seed, **saved["env_kwargs"])
    rng = np.random.default_rng(seed)

    def uniform(state: np.ndarray, obs: np.ndarray) -> np.ndarray:
        return rng.integers(0, envs.num_actions, (len(state), envs.num_agents))

    record = {"run": str(path), "algo": saved["algo"], "env": saved["env"],
              "env_kwargs": saved["env_kwargs"], "episodes": episodes, "seed": seed}
    if "acting" in saved["config"] or acting is not None:
        record["acting"] = acting or saved["config"]["acting"]
    try:
        record["greedy"] = evaluate(greedy, envs, episodes, seed=seed)
        record["uniform_random"] = evaluate(uniform, envs, episodes, seed=seed)
        if stochastic:
            record["stochastic"] = evaluate(sampled, envs, episodes, seed=seed)
    finally:
        envs.close()
    return record
