"""Environments: the coverage gridworld, matrix games and adapters, all PettingZoo
`ParallelEnv`s made by name with `make_env`, plus the vectorised `CoverageVecEnv`."""

from spnpolicy.envs.coverage_vec import CoverageVecEnv
from spnpolicy.envs.registry import ENV_NAMES, make_env
from spnpolicy.envs.render import GridworldRenderer, save_episode

__all__ = ["ENV_NAMES", "CoverageVecEnv", "GridworldRenderer", "make_env", "save_episode"]
