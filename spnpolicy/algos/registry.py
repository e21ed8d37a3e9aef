"""The algorithm registry: names -> config class, learner and its loop, per-env defaults.

```python
from spnpolicy.algos.registry import ALGORITHMS, make_config
cfg = make_config("spn-ac", "climbing", {"actor_lr": 1e-3})
```

A config is built from, in increasing priority: the config dataclass's defaults, the
algorithm's defaults for the env's family (``matrix``, ``coverage``, ``mpe``, ``lbf``), its
defaults for the env name, the values fixed by the algorithm (variants sharing a config
class), and the user's overrides (which may not change the fixed values).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from spnpolicy.algos import dcg, spn_ac, value_based
from spnpolicy.algos import i2q, ma2ql, maddpg, masac, qtran  # off-policy baselines
from spnpolicy.algos import coma, dpo, ia2c, ippo, maa2c, mappo, mdpo, pac  # on-policy
from spnpolicy.algos.config import AlgorithmSpec
from spnpolicy.envs.matrix_v0 import GAMES

__all__ = ["ALGORITHMS", "algorithm_names", "env_family", "get_algorithm", "make_config"]

#: Modules whose ``SPECS`` are registered, in listing order.
_MODULES = (spn_ac, value_based, dcg)
_MODULES += (masac, maddpg, qtran, ma2ql, i2q)  # off-policy baselines
_MODULES += (ia2c, maa2c, ippo, mappo, coma, pac, dpo, mdpo)  # on-policy actor-critics
ALGORITHMS: dict[str, AlgorithmSpec] = {spec.name: spec for module in _MODULES
                                        for spec in module.SPECS}


def algorithm_names() -> tuple[str, ...]:
    return tuple(ALGORITHMS)


def get_algorithm(name: str) -> AlgorithmSpec:
    """The registry entry ``name``; ValueError listing the valid names otherwise."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; valid: {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]


def env_family(env: str) -> str:
    """``matrix`` for the matrix games, ``mpe`` / ``lbf`` for those adapters, else the name."""
    if env in GAMES:
        return "matrix"
    return env.split("/", 1)[0] if "/" in env else env


def default_overrides(algo: str, env: str | None) -> dict[str, Any]:
    """What ``algo`` sets on top of its config class's defaults for ``env`` (``None``: for
    no env in particular, only the values that define the algorithm)."""
    spec = get_algorithm(algo)
    if env is None:
        return dict(spec.fixed)
    family = env_family(env)
    merged = dict(spec.env_defaults.get(family, {}))
    if env != family:
        merged |= spec.env_defaults.get(env, {})
    return merged | spec.fixed


def make_config(algo: str, env: str | None, overrides: dict[str, Any] | None = None):
    """The config of ``algo`` on ``env`` (``None``: without any env's defaults) with the
    user's ``overrides`` applied.

    Raises ValueError for an unknown algorithm or config key (listing the valid ones), an
    override of a value that defines the algorithm, or an invalid value (naming the field).
    """
    spec = get_algorithm(algo)
    overrides = dict(overrides or {})
    valid = [f.name for f in dataclasses.fields(spec.config_cls)]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown} for {algo!r}; valid keys: "
                         f"{', '.join(valid)}")
    for key, value in spec.fixed.items():
        if key in overrides and overrides[key] != value:
            raise ValueError(f"{key}={value!r} defines the algorithm {algo!r} and cannot be "
                             f"overridden (got {overrides[key]!r}); choose another algorithm")
    return spec.config_cls(**(default_overrides(algo, env) | overrides))
