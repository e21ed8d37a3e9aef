"""``spnpolicy.train``: train any registered algorithm on any registered environment.

```python
import spnpolicy
result = spnpolicy.train("spn-ac", "climbing", seed=0)
result.eval                     # {"return_mean": 11.0, "success_rate": 1.0, ...}
result.agent.act([[1.0]])       # array([[0, 0]]): the greedy joint action for state [1.0]
result.agent.distribution([[1.0]]).log_prob(torch.tensor([[0, 0]])).exp()
```
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from spnpolicy.algos.registry import get_algorithm, make_config
from spnpolicy.envs.registry import ENV_NAMES, LBF_PREFIX, make_env
from spnpolicy.training import RunSpec, Session

__all__ = ["TrainResult", "check_env_name", "train"]


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    eval: dict[str, Any]
    """The final greedy evaluation: ``return_mean``, ``success_rate`` (if defined), ..."""
    history: list[dict[str, Any]]
    """Every evaluation record, in order, each with ``step`` (the lines of metrics.jsonl)."""
    agent: Any
    """The trained agent: ``act(observations, deterministic=True)``; circuit policies also
    have ``distribution(observations)``. Centralised agents take global states ``[B, S]``."""
    config: Any
    """The full config dataclass the run used."""
    out_dir: Path | None
    """The run directory, or None."""


def check_env_name(env: Any) -> None:
    """ValueError listing the valid environments unless ``env`` is a registered name."""
    if not isinstance(env, str) or not (env in ENV_NAMES or (
            env.startswith(LBF_PREFIX) and len(env) > len(LBF_PREFIX))):
        raise ValueError(f"unknown environment {env!r}; valid: {', '.join(ENV_NAMES)}, or "
                         f"'lbf/<lbforaging id>'")


def train(algo: str, env: str, seed: int = 0, total_steps: int | None = None,
          out_dir: str | os.PathLike | None = None, env_kwargs: dict[str, Any] | None = None,
          *, resume: bool = False, progress: bool | None = None, verbose: bool | None = None,
          **config: Any) -> TrainResult:
    """Train ``algo`` on ``env`` and evaluate it greedily.

    Args:
        algo: a registered algorithm (``spnpolicy.algos.ALGORITHMS``), e.g. ``"spn-ac"``.
        env: a registered environment (``spnpolicy.envs.ENV_NAMES``), e.g. ``"climbing"``.
        seed: seeds torch, numpy, Python's random and the environments.
        total_steps: env-step budget; ``None`` = the algorithm's default for ``env``.
        out_dir: run directory for ``config.json``, ``metrics.jsonl``/``.csv`` and
            ``checkpoints/last.pt``; ``None`` writes nothing.
        env_kwargs: arguments of the environment (``make_env(env, **env_kwargs)``).
        resume: continue from ``out_dir``'s last checkpoint if there is one; the result is
            then the same as an uninterrupted run's.
        progress: tqdm bar on stderr (default: when stderr is a terminal).
        verbose: one line per evaluation on stdout (default: when stdout is a terminal).
        **config: overrides of the algorithm's config fields (unknown keys: ValueError).
    """
    spec = get_algorithm(algo)
    check_env_name(env)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    if total_steps is not None:
        config["total_steps"] = total_steps
    if env_kwargs is not None and not isinstance(env_kwargs, dict):
        raise ValueError(f"env_kwargs must be a dict or None, got {env_kwargs!r}")
    env_kwargs = dict(env_kwargs or {})
    make_env(env, **env_kwargs).close()  # bad env arguments fail here, before any file is written
    cfg = make_config(algo, env, config)
    if resume and out_dir is None:
        raise ValueError("resume=True needs an out_dir to resume from")
    run = RunSpec(algo, env, seed, env_kwargs, dataclasses.asdict(cfg))
    session = Session(run, total_steps=cfg.total_steps, eval_interval=cfg.eval_interval,
                      checkpoint_interval=cfg.checkpoint_interval, out_dir=out_dir,
                      resume=resume,
                      progress=sys.stderr.isatty() if progress is None else progress,
                      stdout=sys.stdout.isatty() if verbose is None else verbose)
    threads = torch.get_num_threads()
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    try:
        agent = spec.train(cfg, env, env_kwargs, seed, session)
    finally:
        session.close()
        torch.set_num_threads(threads)
    return TrainResult(eval=session.history[-1], history=session.history, agent=agent,
                       config=cfg, out_dir=session.out_dir)
