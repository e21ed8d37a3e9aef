"""spnpolicy: tractable joint policies for cooperative multi-agent RL with sum-product networks."""

from spnpolicy.api import TrainResult, train
from spnpolicy.envs.registry import make_env, register_env

__all__ = ["TrainResult", "make_env", "register_env", "train"]
