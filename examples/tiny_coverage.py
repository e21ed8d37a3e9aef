"""The task and agent that `broken_agent.py` and `anomaly_scores.py` share: spn-ac on a
3-agent coverage gridworld small enough to train in seconds."""

import sys

import spnpolicy
from spnpolicy.inference import load_agent

#: 3 agents on 4x4, 15 steps, rewarded by the fraction of goals covered.
ENV = dict(num_agents=3, grid_size=4, max_steps=15, reward="coverage")


def agent_from_argv():
    """The agent of the run directory named by the first command-line argument (a run
    trained on ENV), or else one trained here by a tiny spn-ac run (4,000 env steps)."""
    if len(sys.argv) > 1:
        return load_agent(sys.argv[1])
    return spnpolicy.train("spn-ac", "coverage", seed=0, env_kwargs=ENV, total_steps=4_000,
                           num_envs=16, learning_starts=1_000, eval_interval=4_000,
                           eval_episodes=16, verbose=False).agent
