"""``mappo``: multi-agent PPO with a centralised critic (Yu et al. 2022).

The learner of :mod:`spnpolicy.algos.ippo` with the critic ``V_i(s)`` on the global state
(plus the agent id): decentralised actors ``pi_i(u_i | o_i)`` trained with the clipped
surrogate over ``epochs`` passes, advantages from n-step returns of the target critic
(EPyMARL's variant; ``returns="gae"`` and ``minibatches`` give BenchMARL's).
"""

from __future__ import annotations

from spnpolicy.algos.config import AlgorithmSpec
from spnpolicy.algos.ippo import PPO_ENV_DEFAULTS, PPOConfig, PPOLearner
from spnpolicy.algos.onpolicy_common import ON_POLICY

__all__ = ["SPECS"]

SPECS = (
    AlgorithmSpec("mappo", "PPO with a centralised critic on the global state", PPOConfig,
                  PPOLearner, {"critic_input": "state"}, PPO_ENV_DEFAULTS,
                  **ON_POLICY),
)
