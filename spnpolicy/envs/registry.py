"""`make_env(name, **kwargs)`: every environment of the toolkit by name, and your own.

>>> import spnpolicy
>>> env = spnpolicy.make_env("coverage", num_agents=3, grid_size=6)
>>> env.possible_agents
['agent_0', 'agent_1', 'agent_2']

Names (`ENV_NAMES`, described in `ENV_DESCRIPTIONS`): `coverage` (arguments of
`coverage_v0.parallel_env`); `lift` (arguments of `lift.parallel_env`: n agents must
act together, a partial attempt is penalised); the matrix games `climbing`, `penalty`, `coordination`,
`linear`, `monotonic`, `stag_hunt` (arguments `k` for penalty and `episode_length`);
`predator-prey` (arguments of `predator_prey_v0.parallel_env`: the DCG paper's
predator-prey with punishment);
`mpe/<task>` for mpe2's simple_spread, simple_speaker_listener, simple_tag and
simple_adversary (extra `mpe`); `lbf/<id>` for any lbforaging id such as
`lbf/Foraging-8x8-2p-3f-v3` (extra `lbf`); and `vmas/dispersion`, `vmas/navigation`,
`vmas/transport` (arguments of `vmas.parallel_env`: VMAS scenarios, extra `vmas`).

Your own environment: any callable returning a PettingZoo `ParallelEnv` with discrete
action spaces. `register_env("my-env", factory)` makes `"my-env"` a name like the others
(for `spnpolicy.train`, bench suites and, in the process that registered it, everything
else); a name `"package.module:factory"` or `"path/to/file.py:factory"` is imported on
first use, so it also works from the command line and in worker processes.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pettingzoo import ParallelEnv

from spnpolicy.envs import coverage_core, coverage_v0, lbf, lift, matrix_v0, mpe
from spnpolicy.envs import predator_prey_core, predator_prey_v0, vmas

__all__ = ["ENV_DESCRIPTIONS", "ENV_NAMES", "action_names", "check_env_name", "env_names",
           "is_env_name", "make_env", "register_env", "registered_envs"]

LBF_PREFIX = "lbf/"
MPE_PREFIX = "mpe/"
VMAS_PREFIX = "vmas/"
ENV_NAMES = ("coverage", "lift", *matrix_v0.GAMES, *(MPE_PREFIX + task for task in mpe.MPE_TASKS),
             "predator-prey", *(VMAS_PREFIX + task for task in vmas.TASKS))
LBF_EXAMPLE = "lbf/Foraging-8x8-2p-3f-v3"

_COVERAGE = coverage_core.CoverageConfig()
_PREDATOR_PREY = predator_prey_core.PredatorPreyConfig()
_MATRIX = ("two agents play the payoff matrix {payoff} once (episode_length=1); "
           "team reward = the payoff; observation and state [1.0]; optimum {optimum}")
#: One line per environment (family): the task, its reward, its observation layout.
ENV_DESCRIPTIONS: dict[str, str] = {
    "coverage": f"n agents (num_agents, default {_COVERAGE.num_agents}) on a grid_size x "
                f"grid_size grid (default {_COVERAGE.grid_size}; episodes of max_steps="
                f"{_COVERAGE.max_steps}) must each stand on one of n goals; actions "
                f"{'/'.join(coverage_core.ACTION_NAMES)}; team reward (reward=) sparse "
                f"(default: 1 when every goal holds an agent, which ends the episode), "
                f"coverage (the fraction of goals held) or distance (minus the mean distance "
                f"from each goal to its nearest agent); state = agent positions, goal "
                f"positions, goals held, time (5n+1 floats in [0, 1]); an agent's observation "
                f"= the state + its one-hot index (observation='relative' adds offsets; "
                f"'egocentric': its own cell, time, goals held, one-hot index and offsets, "
                f"no copy of the state; 'nearest': its own cell, time, whether it stands "
                f"on a goal, and its `neighbours` (default {_COVERAGE.neighbours}) nearest "
                f"goals and agents as offsets with a held flag, no index, 4 + 6 neighbours "
                f"floats at most)",
    "lift": f"n agents (num_agents, default {lift.LiftConfig.num_agents}) start 0..distance "
            f"steps from an object (default {lift.LiftConfig.distance}) and must lift it "
            f"together: actions {'/'.join(lift.ACTION_NAMES)}; reward 1 (success, the "
            f"episode ends) when `required` agents (default all) at the object lift at once, "
            f"-penalty (default {lift.LiftConfig.penalty}) for a step where someone lifts "
            f"and it fails; the episode ends unsuccessfully at max_steps (default "
            f"{lift.LiftConfig.max_steps}, a deadline: time is in the state); state = distances, time "
            f"(n+1 floats); observation = state + one-hot index",
    "predator-prey": f"the DCG paper's relative-overgeneralisation task: num_agents "
                     f"predators (default {_PREDATOR_PREY.num_agents}) hunt num_prey "
                     f"prey (default {_PREDATOR_PREY.num_prey}) moving at random on a "
                     f"grid_size x grid_size grid (default {_PREDATOR_PREY.grid_size}; "
                     f"max_steps={_PREDATOR_PREY.max_steps}); actions "
                     f"{'/'.join(predator_prey_core.ACTION_NAMES)}; two or more "
                     f"predators next to a prey catching at once capture it "
                     f"(+capture_reward, default {_PREDATOR_PREY.capture_reward:g}; "
                     f"prey and catchers leave the grid), a lone attempt gives "
                     f"-punishment (default {_PREDATOR_PREY.punishment:g}); ends when "
                     f"every prey is caught or every predator gone; observation = the "
                     f"predator and prey cells within obs_radius (default "
                     f"{_PREDATOR_PREY.obs_radius}: a {_PREDATOR_PREY.window}x"
                     f"{_PREDATOR_PREY.window} window); state = the grid's "
                     f"predator and prey cells, then each predator's window and cell "
                     f"(state='grid': the paper's grid alone, which does not say which "
                     f"predator is where)",
    "climbing": _MATRIX.format(payoff="[[11,-30,0],[-30,7,0],[0,6,5]]", optimum="(0, 0)"),
    "penalty": _MATRIX.format(payoff="[[-k,0,10],[0,2,0],[10,0,-k]] (k=100)",
                              optimum="(0, 2) or (2, 0)"),
    "coordination": _MATRIX.format(payoff="[[0,-5],[-5,10]]", optimum="(1, 1)"),
    "linear": _MATRIX.format(payoff="[[1,5],[5,9]]", optimum="(1, 1)"),
    "monotonic": _MATRIX.format(payoff="[[0,0],[0,10]]", optimum="(1, 1)"),
    "stag_hunt": "two agents, general-sum stag hunt: row agent [[4,0],[3,2]], column agent "
                 "its transpose; team reward = the sum; observation [1.0]; optimum (0, 0)",
    "mpe/": "mpe2's particle tasks (extra mpe) with discrete actions: simple_spread "
            "(cooperative navigation), simple_speaker_listener, simple_tag, "
            "simple_adversary; rewards, observations and state as mpe2 documents them",
    "lbf/": "level-based foraging (extra lbf), e.g. lbf/Foraging-8x8-2p-3f-v3: agents "
            "collect food whose level is at most the sum of the levels of the agents "
            "loading it; per-agent rewards (team reward = their sum); observation "
            "(x, y, level) per food then per player, self first; state = observations "
            "concatenated",
    **{VMAS_PREFIX + task: f"VMAS's {task} (extra vmas): {spec.goal}; n_agents (default "
                           f"{vmas.VmasConfig.n_agents}), max_steps="
                           f"{vmas.VmasConfig.max_steps} (a truncation), VMAS's scenario "
                           f"arguments; "
                           f"actions noop/left/right/down/up (diagonal_moves=True adds the "
                           f"diagonals); team reward = the mean of the agents' rewards; "
                           f"success (ends the episode): {spec.success}; observation = "
                           f"VMAS's; state = {spec.state_layout}"
       for task, spec in vmas.TASKS.items()},
}

_REGISTERED: dict[str, Callable[..., ParallelEnv]] = {}


def _builtin(name: str) -> bool:
    return name in ENV_NAMES or (name.startswith(LBF_PREFIX) and len(name) > len(LBF_PREFIX))


def register_env(name: str, factory: Callable[..., ParallelEnv], *,
                 overwrite: bool = False) -> str:
    """Make ``name`` an environment name for ``make_env``, ``spnpolicy.train`` and bench
    suites: ``make_env(name, **kwargs)`` calls ``factory(**kwargs)``, which must return a
    PettingZoo ``ParallelEnv`` with discrete action spaces. Returns ``name``.

    The registration lives in this process (bench workers started by ``spnpolicy bench``
    inherit it); a name ``"module:factory"`` needs no registration at all.
    ValueError for a name that is empty, a built-in name, or already registered to another
    factory (unless ``overwrite``), or a factory that is not callable.
    """
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise ValueError(f"name must be a non-empty string without surrounding spaces, "
                         f"got {name!r}")
    if _builtin(name) or name.startswith((MPE_PREFIX, LBF_PREFIX, VMAS_PREFIX)):
        raise ValueError(f"name {name!r} is a built-in environment name (or prefix); "
                         f"choose another one")
    if not callable(factory):
        raise ValueError(f"factory must be a callable returning a ParallelEnv, got "
                         f"{factory!r}")
    if not overwrite and _REGISTERED.get(name, factory) is not factory:
        raise ValueError(f"env {name!r} is already registered to {_REGISTERED[name]!r}; pass "
                         f"overwrite=True to replace it")
    _REGISTERED[name] = factory
    return name


def registered_envs() -> dict[str, Callable[..., ParallelEnv]]:
    """The names registered with :func:`register_env` in this process, and their factories."""
    return dict(_REGISTERED)


def env_names() -> tuple[str, ...]:
    """The built-in names, then the registered ones."""
    return ENV_NAMES + tuple(_REGISTERED)


def _import_factory(name: str) -> Callable[..., ParallelEnv] | None:
    """The factory ``module:attr`` or ``file.py:attr`` names, or None if ``name`` is not of
    that form. ValueError naming ``name`` when the import fails."""
    module_name, sep, attr = name.rpartition(":")
    if not sep or not module_name or not attr.isidentifier():
        return None
    try:
        if module_name.endswith(".py"):
            path = Path(module_name).resolve()
            key = f"spnpolicy_user_env_{abs(hash(str(path)))}"
            module = sys.modules.get(key)
            if module is None:
                spec = importlib.util.spec_from_file_location(key, path)
                if spec is None or not path.is_file():
                    raise FileNotFoundError(f"no file {path}")
                module = importlib.util.module_from_spec(spec)
                sys.modules[key] = module
                spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except (ImportError, FileNotFoundError, SyntaxError) as error:
        raise ValueError(f"env {name!r}: cannot import {module_name!r} ({error})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"env {name!r}: {module_name!r} has no callable {attr!r}")
    return factory


def is_env_name(name: Any) -> bool:
    """Whether ``name`` is a built-in, registered or importable (``module:factory``) env."""
    if not isinstance(name, str):
        return False
    if _builtin(name) or name in _REGISTERED:
        return True
    try:
        return _import_factory(name) is not None
    except ValueError:
        return False


def _custom_elsewhere(name: Any) -> None:
    """ValueError for a ``"custom:..."`` name that this process does not know: the name
    ``spnpolicy.train`` gave a lambda or local function, which lives only in the process
    that registered it (a run's config records the name, not the function)."""
    if isinstance(name, str) and name.startswith("custom:") and name not in _REGISTERED:
        raise ValueError(f"env {name!r} was a lambda or local function given to "
                         f"spnpolicy.train in another process, and only that process knows "
                         f"it: call spnpolicy.register_env({name!r}, factory) here first, or "
                         f"train on an importable 'module:factory' (or 'file.py:factory') "
                         f"so that runs can be resumed and queried anywhere")


def check_env_name(env: Any) -> None:
    """ValueError listing the valid environments unless ``env`` names one."""
    if not is_env_name(env):
        _custom_elsewhere(env)
        if isinstance(env, str) and ":" in env:
            _import_factory(env)  # raises the import's own reason
        raise ValueError(f"unknown environment {env!r}; valid: {', '.join(env_names())}, "
                         f"'lbf/<lbforaging id>', a name given to spnpolicy.register_env, or "
                         f"'module:factory' / 'file.py:factory' (a callable returning a "
                         f"PettingZoo ParallelEnv)")


def _check_arguments(name: str, factory: Callable[..., Any], kwargs: dict[str, Any],
                     exclude: tuple[str, ...] = ()) -> None:
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return  # a builtin or C callable: let it check its own arguments
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    valid = tuple(p for p in parameters if p not in exclude)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(f"unknown argument(s) {unknown} for env {name!r}; valid: {valid}")


def _custom(name: str, factory: Callable[..., Any], kwargs: dict[str, Any]) -> ParallelEnv:
    _check_arguments(name, factory, kwargs)
    env = factory(**kwargs)
    missing = [a for a in ("possible_agents", "reset", "step", "action_space",
                           "observation_space") if not hasattr(env, a)]
    if missing:
        raise ValueError(f"env {name!r}: the factory returned {type(env).__name__}, not a "
                         f"PettingZoo ParallelEnv (it lacks {', '.join(missing)})")
    return env


def make_env(name: str, **kwargs: Any) -> ParallelEnv:
    """A new PettingZoo `ParallelEnv` for `name` (see `ENV_NAMES`, :func:`register_env`)
    built with `kwargs`.

    Raises ValueError for an unknown name (listing the valid ones), an unknown keyword
    argument or a bad value (naming the argument); ImportError when an optional extra
    (mpe2, lbforaging, vmas) is missing.
    """
    if not isinstance(name, str):
        raise ValueError(f"name must be a string, one of {env_names()} or "
                         f"'lbf/<id>', got {name!r}")
    if name == "coverage":
        _check_arguments(name, coverage_v0.parallel_env, kwargs)
        return coverage_v0.parallel_env(**kwargs)
    if name == "lift":
        _check_arguments(name, lift.parallel_env, kwargs)
        return lift.parallel_env(**kwargs)
    if name == "predator-prey":
        _check_arguments(name, predator_prey_v0.parallel_env, kwargs)
        return predator_prey_v0.parallel_env(**kwargs)
    if name in matrix_v0.GAMES:
        _check_arguments(name, matrix_v0.parallel_env, kwargs, exclude=("game",))
        return matrix_v0.parallel_env(game=name, **kwargs)
    if name.startswith(MPE_PREFIX) and name[len(MPE_PREFIX):] in mpe.MPE_TASKS:
        return mpe.parallel_env(name[len(MPE_PREFIX):], **kwargs)
    if name.startswith(LBF_PREFIX) and len(name) > len(LBF_PREFIX):
        return lbf.parallel_env(name[len(LBF_PREFIX):], **kwargs)
    if name.startswith(VMAS_PREFIX) and name[len(VMAS_PREFIX):] in vmas.TASKS:
        return vmas.parallel_env(name[len(VMAS_PREFIX):], **kwargs)
    if name in _REGISTERED:
        return _custom(name, _REGISTERED[name], kwargs)
    _custom_elsewhere(name)
    factory = _import_factory(name)
    if factory is not None:
        return _custom(name, factory, kwargs)
    raise ValueError(f"unknown env {name!r}; valid names: {', '.join(env_names())}, "
                     f"'lbf/<lbforaging id>' such as {LBF_EXAMPLE!r}, a name given to "
                     f"spnpolicy.register_env, or 'module:factory'")


#: mpe2's discrete moves (every agent of these tasks): 0 none, 1 -x, 2 +x, 3 -y, 4 +y
MPE_MOVES = ("noop", "left", "right", "down", "up")
#: lbforaging's ``Action`` enum
LBF_ACTIONS = ("none", "north", "south", "west", "east", "load")


def action_names(name: str, num_actions: int) -> tuple[str, ...]:
    """Names of env ``name``'s actions (``coverage``: noop, up, ...; ``lbf/...``: none, north,
    ...; the MPE tasks whose agents all move and the VMAS tasks: noop, left, ...), else
    ``"0".."k-1"``."""
    if name == "coverage":
        return tuple(coverage_core.ACTION_NAMES)
    if name == "lift":
        return lift.ACTION_NAMES
    if name == "predator-prey":
        return predator_prey_core.ACTION_NAMES
    known = (LBF_ACTIONS if isinstance(name, str) and name.startswith(LBF_PREFIX) else
             MPE_MOVES if name in ("mpe/simple_spread", "mpe/simple_tag",
                                   "mpe/simple_adversary") else
             vmas.action_names(diagonal_moves=num_actions != len(vmas.action_names()))
             if isinstance(name, str) and name.startswith(VMAS_PREFIX) else None)
    if known is not None and len(known) == num_actions:
        return known
    return tuple(str(a) for a in range(num_actions))
