"""``agent.act`` on a PettingZoo observation dict: the actions ``env.step`` takes for agents
that read per-agent observations, a clear error for those that read global states."""

import numpy as np
import pytest

import spnpolicy
from spnpolicy.algos.policies import JointPolicy
from spnpolicy.training.vec_env import global_state, observation_dict

COVERAGE = dict(num_agents=3, grid_size=4, max_steps=6)


@pytest.mark.parametrize("algo, config", [
    ("vdn", dict(learning_starts=64, batch_size=16, hidden=(16,))),   # off-policy loop
    ("ia2c", dict()),                                                  # on-policy loop
])
def test_an_episode_driven_by_act_on_the_env_observations(algo, config):
    result = spnpolicy.train(algo, "coverage", seed=0, total_steps=128, env_kwargs=COVERAGE,
                             num_envs=8, eval_interval=128, eval_episodes=2, **config)
    env = spnpolicy.make_env("coverage", **COVERAGE)
    obs, _ = env.reset(seed=3)
    steps = 0
    while env.agents:
        actions = result.agent.act(obs)
        assert isinstance(actions, dict) and list(actions) == list(obs)
        stacked = np.stack([obs[a] for a in obs])
        assert list(actions.values()) == result.agent.act(stacked).tolist()
        obs, _, _, _, _ = env.step(actions)
        steps += 1
    assert steps >= 1


def test_a_global_state_policy_names_what_to_pass():
    env = spnpolicy.make_env("coverage", **COVERAGE)
    obs, _ = env.reset(seed=0)
    state = global_state(env, obs)
    policy = JointPolicy(state_dim=state.size, num_agents=3, num_actions=6)
    with pytest.raises(TypeError, match=r"global_state\(env, observations\)"):
        policy.act(obs)
    assert policy.act(state).shape == (3,)


def test_observation_dict_checks_the_agents():
    obs = {"a": np.zeros(2), "b": np.ones(3)}
    np.testing.assert_array_equal(observation_dict(obs, 2, 3), [[0, 0, 0], [1, 1, 1]])
    with pytest.raises(ValueError, match=r"hold 2 agents \(a, b\); the agent acts for 3"):
        observation_dict(obs, 3, 3)
    with pytest.raises(ValueError, match=r"observations\['b'\] has 3 numbers"):
        observation_dict(obs, 2, 2)
