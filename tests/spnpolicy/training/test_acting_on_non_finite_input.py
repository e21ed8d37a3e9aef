"""``agent.act`` rejects a NaN or infinite input with a ValueError naming where it is, as
``agent.distribution`` does, instead of acting on it (a network maps NaN to some action)."""

import math

import numpy as np
import pytest
import torch

import spnpolicy
from spnpolicy.algos.i2q import StateAgentQ
from spnpolicy.algos.onpolicy_common import OnPolicyAgent
from spnpolicy.algos.value_based import AgentQNetwork, MixedQ
from spnpolicy.training.observations import agent_input, observation_dict

CPU = torch.device("cpu")
BAD = [math.nan, math.inf, -math.inf]


def per_agent_agents():
    torch.manual_seed(0)
    return [MixedQ(AgentQNetwork(3, 2, 4, (8,)), None),     # off-policy loop (vdn, qmix, ...)
            OnPolicyAgent(3, 2, 4, (8,))]                     # on-policy loop (ia2c, mappo, ...)


@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize("kind", ["array", "list", "tensor"])
def test_per_agent_agents_name_the_input_agent_and_entry(bad, kind):
    obs = np.zeros((5, 2, 3), dtype=np.float32)
    obs[3, 1, 2] = bad
    given = {"array": obs, "list": obs.tolist(), "tensor": torch.as_tensor(obs)}[kind]
    for agent in per_agent_agents():
        assert agent.act(np.zeros((5, 2, 3))).shape == (5, 2)
        with pytest.raises(ValueError, match=rf"observations\[3, 1, 2\] is {bad} \(per-agent "
                                             rf"observations \[B, n, obs_dim\]: input 3, "
                                             rf"agent 1, entry 2; 1 of 5 inputs"):
            agent.act(given)
        with pytest.raises(ValueError, match=r"observations\[1, 2\] is .*agent 1, entry 2; "
                                             r"1 of 1 inputs"):
            agent.act(obs[3], deterministic=False)                       # one input [n, obs_dim]


def test_per_agent_agents_name_the_agent_of_an_observation_dict():
    obs = {"left": np.zeros(3), "right": np.array([0.0, math.nan, 1.0])}
    for agent in per_agent_agents():
        with pytest.raises(ValueError, match=r"observations\['right'\] holds nan at entry 1"):
            agent.act(obs)
    with pytest.raises(ValueError, match=r"observations\['left'\] holds inf at entry 0"):
        observation_dict({"left": [math.inf], "right": [0.0]}, 2, 2)


def test_a_global_state_agent_names_the_state_and_entry():
    agent = StateAgentQ(state_dim=4, num_agents=2, num_actions=3, hidden=(8,))
    states = torch.zeros(2, 4)
    states[1, 3] = -math.inf
    with pytest.raises(ValueError, match=r"observations\[1, 3\] is -inf \(global states "
                                         r"\[B, state_dim\]: state 1, entry 3; 1 of 2 inputs"):
        agent.act(states)
    with pytest.raises(ValueError, match=r"observations\[3\] is -inf \(global states"):
        agent.act(states[1].numpy())


def test_agent_input_counts_the_rows_and_keeps_finite_input():
    x, single = agent_input([[1.0, 2.0], [3.0, 4.0]], (2,), CPU)
    assert not single and torch.equal(x, torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    x, single = agent_input(torch.ones(2, 3, dtype=torch.float64), (2, 3), CPU)
    assert single and x.dtype == torch.float32 and x.shape == (1, 2, 3)
    with pytest.raises(ValueError, match=r"observations\[0, 0\] is nan .* 2 of 3 inputs"):
        agent_input([[math.nan, 0.0], [1.0, 1.0], [0.0, math.inf]], (2,), CPU)
    with pytest.raises(ValueError, match=r"must be global states \[B, state_dim\] = \[B, 2\]"):
        agent_input([1.0, 2.0, 3.0], (2,), CPU)


def test_a_trained_agent_rejects_what_it_acted_on_before():
    result = spnpolicy.train("vdn", "climbing", seed=0, total_steps=64, learning_starts=32,
                             batch_size=8, hidden=(8,), eval_interval=64, eval_episodes=1)
    assert result.agent.act([[[1.0], [1.0]]]).shape == (1, 2)
    with pytest.raises(ValueError, match=r"observations\[0, 0, 0\] is nan"):
        result.agent.act([[[math.nan], [1.0]]])


def test_a_circuit_policy_names_the_state_and_entry():
    """spn-ac's JointPolicy (meanfield-ac, reinforce too) refuses what distribution refuses."""
    from spnpolicy.algos.policies import JointPolicy
    torch.manual_seed(0)
    policy = JointPolicy(state_dim=3, num_agents=2, num_actions=4, kind="selective", width=4,
                         hidden=(8,))
    states = np.zeros((4, 3), dtype=np.float32)
    assert policy.act(states).shape == (4, 2) and policy.act(states[0]).shape == (2,)
    states[2, 1] = math.nan
    with pytest.raises(ValueError, match=r"observations\[2, 1\] is nan \(global states"):
        policy.act(states)
    with pytest.raises(ValueError, match=r"observations\[1\] is nan"):
        policy.act(torch.as_tensor(states[2]), deterministic=False)
