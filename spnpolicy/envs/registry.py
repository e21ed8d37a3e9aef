"""`make_env(name, **kwargs)`: every environment of the toolkit by name.

>>> import spnpolicy
>>> env = spnpolicy.make_env("coverage", num_agents=3, grid_size=6)
>>> env.possible_agents
['agent_0', 'agent_1', 'agent_2']

Names (`ENV_NAMES`): `coverage` (arguments of `coverage_v0.parallel_env`); the matrix games
`climbing`, `penalty`, `coordination`, `linear`, `monotonic`, `stag_hunt` (arguments `k` for
penalty and `episode_length`); `mpe/<task>` for mpe2's simple_spread,
simple_speaker_listener, simple_tag and simple_adversary (extra `mpe`); and `lbf/<id>` for
any lbforaging id such as `lbf/Foraging-8x8-2p-3f-v3` (extra `lbf`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from pettingzoo import ParallelEnv

from spnpolicy.envs import coverage_v0, lbf, matrix_v0, mpe

LBF_PREFIX = "lbf/"
MPE_PREFIX = "mpe/"
ENV_NAMES = ("coverage", *matrix_v0.GAMES, *(MPE_PREFIX + task for task in mpe.MPE_TASKS))
LBF_EXAMPLE = "lbf/Foraging-8x8-2p-3f-v3"


def _check_arguments(name: str, factory: Callable[..., Any], kwargs: dict[str, Any],
                     exclude: tuple[str, ...] = ()) -> None:
    valid = tuple(p for p in inspect.signature(factory).parameters if p not in exclude)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(f"unknown argument(s) {unknown} for env {name!r}; valid: {valid}")


def make_env(name: str, **kwargs: Any) -> ParallelEnv:
    """A new PettingZoo `ParallelEnv` for `name` (see `ENV_NAMES`) built with `kwargs`.

    Raises ValueError for an unknown name (listing the valid ones), an unknown keyword
    argument or a bad value (naming the argument); ImportError when an optional extra
    (mpe2, lbforaging) is missing.
    """
    if not isinstance(name, str):
        raise ValueError(f"name must be a string, one of {ENV_NAMES} or "
                         f"'lbf/<id>', got {name!r}")
    if name == "coverage":
        _check_arguments(name, coverage_v0.parallel_env, kwargs)
        return coverage_v0.parallel_env(**kwargs)
    if name in matrix_v0.GAMES:
        _check_arguments(name, matrix_v0.parallel_env, kwargs, exclude=("game",))
        return matrix_v0.parallel_env(game=name, **kwargs)
    if name.startswith(MPE_PREFIX) and name[len(MPE_PREFIX):] in mpe.MPE_TASKS:
        return mpe.parallel_env(name[len(MPE_PREFIX):], **kwargs)
    if name.startswith(LBF_PREFIX) and len(name) > len(LBF_PREFIX):
        return lbf.parallel_env(name[len(LBF_PREFIX):], **kwargs)
    raise ValueError(f"unknown env {name!r}; valid names: {', '.join(ENV_NAMES)}, or "
                     f"'lbf/<lbforaging id>' such as {LBF_EXAMPLE!r}")
