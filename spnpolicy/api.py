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

import contextlib
import dataclasses
import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from spnpolicy.algos.config import field_values
from spnpolicy.algos.registry import get_algorithm, make_config
from spnpolicy.envs.registry import action_names, check_env_name, make_env, register_env
from spnpolicy.training import RunSpec, Session
from spnpolicy.training.rundir import RunDir, is_training_record
from spnpolicy.training.session import check_budget
from spnpolicy.training.tracking import check_tracking

__all__ = ["TrainResult", "check_device", "check_env_name", "env_name", "train"]


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    eval: dict[str, Any]
    """The final greedy evaluation: ``return_mean``, ``success_rate`` (if defined), ..."""
    history: list[dict[str, Any]]
    """Every evaluation record, in order, each with ``step`` (the evaluation lines of
    metrics.jsonl)."""
    agent: Any
    """The trained agent: ``act(observations, deterministic=True)``; circuit policies also
    have ``distribution(observations)``. Centralised agents take global states ``[B, S]``."""
    config: Any
    """The full config dataclass the run used."""
    out_dir: Path | None
    """The run directory, or None."""
    training: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """The training records (every ``log_interval`` env steps, ``"phase": "train"``): the
    training episodes' ``return_mean``, ``length_mean``, ``success_rate`` and the losses."""


def env_name(env: Any) -> str:
    """The registry name of ``env``: a name is checked and returned; a callable returning a
    PettingZoo ``ParallelEnv`` becomes ``"module:qualname"`` (importable again by that name,
    also in another process) or, for lambdas and local functions, is registered in this
    process as ``"custom:<qualname>"``."""
    if isinstance(env, str):
        check_env_name(env)
        return env
    if not callable(env):
        raise ValueError(f"env must be an environment name or a callable returning a "
                         f"PettingZoo ParallelEnv, got {env!r}")
    module, qualname = getattr(env, "__module__", None), getattr(env, "__qualname__", None)
    if module and qualname and "<" not in qualname and "." not in qualname:
        found = getattr(sys.modules.get(module), qualname, None)
        if found is env:
            return f"{module}:{qualname}"
    label = qualname or type(env).__name__
    return register_env(f"custom:{label}", env, overwrite=True)


def check_device(device: str) -> None:
    """ValueError naming ``device`` unless torch can use it here."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device must be a torch device: 'cpu', 'cuda', 'cuda:N' or 'mps', "
                         f"got {device!r}") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r}, but this torch ({torch.__version__}) has no "
                             f"usable CUDA device; use device='cpu'")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r}, but there are only "
                             f"{torch.cuda.device_count()} CUDA device(s) (cuda:0..)")
    elif parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device={device!r}, but MPS is not available here; use 'cpu'")
    elif parsed.type != "cpu":
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}")


def _saved_overrides(algo: str, env: str, run: RunDir) -> tuple[dict[str, Any], dict, int]:
    """``(config, env_kwargs, total_steps)`` saved in ``run``'s ``config.json``, the
    config with its tuple fields as tuples. ValueError when the run is another algo/env."""
    saved = run.read_config()
    if saved["algo"] != algo or saved["env"] != env:
        raise ValueError(f"cannot resume {run.path}: it trained {saved['algo']!r} on "
                         f"{saved['env']!r}, not {algo!r} on {env!r}")
    cls = get_algorithm(algo).config_cls
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(saved["config"]) - fields)
    if unknown:
        raise ValueError(f"cannot resume {run.path}: its config.json has config keys "
                         f"{unknown} that {algo!r} does not have (written by another version)")
    return field_values(cls, saved["config"]), dict(saved["env_kwargs"]), run.total_steps()


def train(algo: str, env: Any, seed: int = 0, total_steps: int | None = None,
          out_dir: str | os.PathLike | None = None, env_kwargs: dict[str, Any] | None = None,
          *, resume: bool = False, init_from: str | os.PathLike | None = None,
          init_partial: bool = False,
          progress: bool | None = None, verbose: bool | None = None,
          **config: Any) -> TrainResult:
    """Train ``algo`` on ``env`` and evaluate it greedily.

    Args:
        algo: a registered algorithm (``spnpolicy.algos.ALGORITHMS``), e.g. ``"spn-ac"``.
        env: a registered environment (``spnpolicy.envs.ENV_NAMES``, or a name given to
            ``spnpolicy.register_env``), e.g. ``"climbing"``; or a callable returning a
            PettingZoo ``ParallelEnv`` with discrete actions (your own env; ``env_kwargs``
            are passed to it).
        seed: seeds torch, numpy, Python's random and the environments.
        total_steps: env-step budget; ``None`` = the algorithm's default for ``env`` (when
            resuming: the saved budget).
        out_dir: run directory for ``config.json``, ``metrics.jsonl``/``.csv`` and
            ``checkpoints/last.pt``; ``None`` writes nothing.
        env_kwargs: arguments of the environment (``make_env(env, **env_kwargs)``).
        resume: continue from ``out_dir``'s last checkpoint if there is one; the result is
            then the same as an uninterrupted run's. The env arguments and config saved in
            ``out_dir/config.json`` are used where not given again; given ones must match
            (ValueError naming the keys that differ), except a larger ``total_steps``.
        init_from: another run's directory (or a checkpoint file in one) of the same
            ``algo``: the new run starts with that run's learner (networks, targets and
            optimizer moments; the learning rates are this config's) and everything else
            fresh: step 0, an empty replay, ``learning_starts``, new env seeds. The config is
            this call's, so it may differ (exploration, ``gradient_steps``, even the env)
            wherever the networks keep their shapes; ValueError naming ``init_from`` when
            they do not. It cannot be combined with resuming a run ``out_dir`` holds.
        init_partial: with ``init_from``, take only the tensors whose shapes fit this run's
            learner; the others (say a per-parameter-group embedding, when the team size
            differs) keep their fresh values, and the optimizers start fresh. The run prints
            and records (``provenance.jsonl``) the tensors it kept fresh.
        progress: tqdm bar on stderr (default: when stderr is a terminal).
        verbose: one line per evaluation on stdout (default: when stdout is a terminal).
        **config: overrides of the algorithm's config fields (unknown keys: ValueError).

    Raises ValueError, naming the argument, for every bad input, before anything is written.
    """
    spec = get_algorithm(algo)
    env = env_name(env)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    if total_steps is not None:
        if "total_steps" in config and config["total_steps"] != total_steps:
            raise ValueError(f"total_steps is given twice: {total_steps!r} and "
                             f"{config['total_steps']!r} (as a config override)")
        config["total_steps"] = total_steps
    if env_kwargs is not None and not isinstance(env_kwargs, dict):
        raise ValueError(f"env_kwargs must be a dict or None, got {env_kwargs!r}")
    if resume and out_dir is None:
        raise ValueError("resume=True needs an out_dir to resume from")
    given, resumed = set(config), None
    if resume and RunDir(out_dir).is_run():
        saved, saved_env_kwargs, saved_steps = _saved_overrides(algo, env, RunDir(out_dir))
        config = saved | {"total_steps": saved_steps} | config
        env_kwargs = saved_env_kwargs if env_kwargs is None else env_kwargs
        resumed = RunDir(out_dir)
    if not isinstance(init_partial, bool):
        raise ValueError(f"init_partial must be True or False, got {init_partial!r}")
    if init_partial and init_from is None:
        raise ValueError("init_partial=True needs init_from, the run to start from")
    if init_from is not None:
        _check_init_from(algo, init_from, resumed)
    env_kwargs = dict(env_kwargs or {})
    make_env(env, **env_kwargs).close()  # bad env arguments fail here, before any file is written
    cfg = make_config(algo, env, config)
    if cfg.start_on_goals:   # the training envs take it: an env without goals refuses it
        try:
            make_env(env, **cfg.training_env_kwargs(env_kwargs)).close()
        except ValueError as error:
            raise ValueError(f"start_on_goals={cfg.start_on_goals} (config) needs an env with "
                             f"goals to start agents on, such as coverage: {error}") from None
    check_device(cfg.device)
    check_tracking(cfg.tracking, out_dir)
    _check_learning_starts(cfg, explicit="learning_starts" in given, resumed=resumed)
    run = RunSpec(algo, env, seed, env_kwargs, dataclasses.asdict(cfg))
    if out_dir is not None:
        _check_saveable(run.config)
        RunDir(out_dir).ensure_writable()
    # one writer per run directory: a second train on it (say a --resume while the first
    # still runs) raises RunBusyError instead of interleaving both runs' files
    with RunDir(out_dir).claim() if out_dir is not None else contextlib.nullcontext():
        session = Session(run, total_steps=cfg.total_steps, eval_interval=cfg.eval_interval,
                          checkpoint_interval=cfg.checkpoint_interval, out_dir=out_dir,
                          resume=resume, log_interval=cfg.log_interval,
                          tracking=cfg.tracking, init_from=init_from,
                          init_partial=init_partial,
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
    _name_actions(agent, env, env_kwargs)
    training = [r for r in session.records if is_training_record(r)]
    return TrainResult(eval=session.history[-1], history=session.history, agent=agent,
                       config=cfg, out_dir=session.out_dir, training=training)


def _check_init_from(algo: str, init_from: str | os.PathLike,
                     resumed: RunDir | None) -> None:
    """ValueError naming ``init_from`` when it is not a run with a checkpoint, trained
    another algorithm, or comes with a run to resume."""
    source, _ = RunDir.locate(init_from)
    trained = source.read_config()["algo"]
    if trained != algo:
        raise ValueError(f"init_from {str(init_from)!r} trained {trained!r}; its learner "
                         f"cannot start a {algo!r} run")
    if resumed is not None:
        raise ValueError(f"init_from starts a new run, and {resumed.path} already holds one "
                         f"to resume: drop init_from to continue it, or give another out_dir")


def _check_saveable(config: dict[str, Any]) -> None:
    """A run directory stores its config as JSON: a Python object (a policy builder, a
    Circuit) cannot be saved, so name it and say what works instead."""
    for key, value in config.items():
        try:
            json.dumps(value)
        except TypeError:
            raise ValueError(
                f"{key}={value!r} cannot be saved in a run directory's config.json; pass "
                f"out_dir=None, or register it under a name (spnpolicy.register_policy(name, "
                f"structure) for a policy) and pass {key}=name") from None


def _check_learning_starts(cfg: Any, explicit: bool, resumed: RunDir | None = None) -> None:
    """A run whose ``learning_starts`` is above its budget never updates: ValueError when
    the user set both, a warning when ``learning_starts`` is the algorithm's default. For a
    ``resumed`` run whose budget is below the steps it has done, that error comes first
    (its checkpoint is read only here, in this rare case: restoring reads it anyway)."""
    starts = getattr(cfg, "learning_starts", None)
    if not isinstance(starts, int) or starts <= cfg.total_steps:
        return
    if resumed is not None:
        check_budget(cfg.total_steps, resumed.checkpoint_step() or 0, resumed.path)
    message = (f"learning_starts={starts:,d} is above total_steps={cfg.total_steps:,d}: the "
               f"run would end before its first update")
    if explicit:
        raise ValueError(f"{message}; give learning_starts <= total_steps")
    warnings.warn(f"{message} (learning_starts is the algorithm's default here; set it "
                  f"lower to train)", UserWarning, stacklevel=3)


def _name_actions(agent: Any, env: str, env_kwargs: dict[str, Any]) -> None:
    """Give a circuit-policy agent ``action_names`` (so queries take ``fixed={1: "noop"}``)."""
    k = getattr(agent, "num_actions", None)
    if isinstance(k, int):
        try:
            agent.action_names = action_names(env, k)
        except AttributeError:
            pass
