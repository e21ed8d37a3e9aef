"""spnpolicy: tractable joint policies for cooperative multi-agent RL with sum-product networks."""

from spnpolicy.envs.registry import make_env

__all__ = ["make_env"]
