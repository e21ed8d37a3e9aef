"""spnpolicy: tractable joint policies for cooperative multi-agent RL with sum-product networks."""

from spnpolicy.api import TrainResult, train
from spnpolicy.algos.policy_structures import register_policy
from spnpolicy.envs.registry import make_env, register_env

__all__ = ["TrainResult", "make_env", "register_env", "register_policy", "train"]
