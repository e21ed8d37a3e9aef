"""``maa2c``: multi-agent advantage actor-critic with a centralised critic.

The learner of :mod:`spnpolicy.algos.ia2c` with the critic ``V_i(s)`` on the global state
(plus the agent id), EPyMARL's ``maa2c`` (``cv_critic``): decentralised actors
``pi_i(u_i | o_i)``, advantage = n-step return from the target critic minus ``V_i(s)``
before the critic's update.
"""

from __future__ import annotations

from spnpolicy.algos.config import AlgorithmSpec
from spnpolicy.algos.ia2c import A2CConfig, A2CLearner
from spnpolicy.algos.onpolicy_common import ENV_DEFAULTS, ON_POLICY

__all__ = ["SPECS"]

SPECS = (
    AlgorithmSpec("maa2c", "advantage actor-critic with a centralised critic on the global "
                  "state", A2CConfig, A2CLearner, {"critic_input": "state"}, ENV_DEFAULTS,
                  **ON_POLICY),
)
