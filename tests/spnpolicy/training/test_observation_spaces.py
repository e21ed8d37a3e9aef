"""Own envs with non-Box observations: Discrete ones become one-hots, MultiDiscrete,
MultiBinary, Tuple and Dict spaces what ``gymnasium.spaces.flatten`` gives, in the vec env,
the global state fallback and training."""

import functools

import numpy as np
import pytest
from gymnasium import spaces
from pettingzoo import ParallelEnv
from pettingzoo.test import parallel_api_test

import spnpolicy
from spnpolicy.training.vec_env import (ParallelEnvVec, flatten_observation, global_state,
                                        max_obs_dim, observation_dict)


class Signal(ParallelEnv):
    """Two agents see a Discrete(3) signal (a0) and a MultiDiscrete([2, 3]) pair (a1); the
    team is rewarded when both play the signal. No ``state()``: the global state is the
    agents' flattened observations."""

    metadata = {"name": "signal_v0"}

    def __init__(self, max_steps: int = 3):
        self.possible_agents = ["a0", "a1"]
        self.agents = []
        self.max_steps = max_steps
        self._rng = np.random.default_rng()

    @functools.cache
    def observation_space(self, agent):
        return spaces.Discrete(3) if agent == "a0" else spaces.MultiDiscrete([2, 3])

    @functools.cache
    def action_space(self, agent):
        return spaces.Discrete(3)

    def _observations(self):
        return {"a0": int(self.signal), "a1": np.array([self.t % 2, self.signal])}

    def reset(self, seed=None, options=None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.agents, self.t = list(self.possible_agents), 0
        self.signal = int(self._rng.integers(3))
        return self._observations(), {a: {} for a in self.agents}

    def step(self, actions):
        hit = all(actions[a] == self.signal for a in self.agents)
        self.t += 1
        self.signal = int(self._rng.integers(3))
        done = self.t >= self.max_steps
        observations = self._observations()
        rewards = {a: float(hit) for a in self.agents}
        infos = {a: {"success": hit} for a in self.agents}
        flags = {a: done for a in self.agents}
        if done:
            self.agents = []
        return observations, rewards, {a: False for a in flags}, flags, infos


def test_signal_passes_the_pettingzoo_parallel_api_test():
    parallel_api_test(Signal(), num_cycles=20)


@pytest.mark.parametrize("space, obs, flat", [
    (spaces.Box(0, 1, (2, 2)), np.array([[0.5, 0], [1, 0.25]]), [0.5, 0, 1, 0.25]),
    (spaces.Discrete(3), 2, [0, 0, 1]),
    (spaces.Discrete(3, start=1), 1, [1, 0, 0]),
    (spaces.MultiDiscrete([2, 3]), np.array([1, 0]), [0, 1, 1, 0, 0]),
    (spaces.MultiBinary(3), np.array([1, 0, 1]), [1, 0, 1]),
    (spaces.Dict({"pos": spaces.Box(0, 1, (2,)), "door": spaces.Discrete(2)}),
     {"pos": np.array([0.25, 0.75]), "door": 1}, [0, 1, 0.25, 0.75]),   # keys sorted
    (spaces.Tuple((spaces.Discrete(2), spaces.Box(0, 1, (1,)))), (0, np.array([0.5])),
     [1, 0, 0.5]),
])
def test_flatten_observation(space, obs, flat):
    out = flatten_observation(space, obs)
    assert out.dtype == np.float32 and out.tolist() == flat


def test_unsupported_spaces_are_named():
    class Texts(Signal):
        def observation_space(self, agent):
            return spaces.Text(5)

    with pytest.raises(ValueError, match=r"observation space of a0 must be a gymnasium Box, "
                                         r"Discrete, MultiDiscrete, MultiBinary, or a Tuple"):
        max_obs_dim(Texts())


def test_vec_env_and_global_state_read_one_hots():
    env = Signal()
    assert max_obs_dim(env) == 5                 # Discrete(3) -> 3, MultiDiscrete([2, 3]) -> 5
    observations, _ = env.reset(seed=0)
    signal = observations["a0"]
    expected = np.zeros((2, 5), np.float32)
    expected[0, signal] = 1
    expected[1, [observations["a1"][0], 2 + signal]] = 1
    np.testing.assert_array_equal(global_state(env, observations), expected.reshape(-1))

    vec = ParallelEnvVec(Signal, num_envs=2, seed=0)
    state, obs = vec.reset(seed=0)
    assert obs.shape == (2, 2, 5) and state.shape == (2, 10)
    for e in range(2):
        assert obs[e, 0, :3].sum() == 1 and obs[e, 0, 3:].sum() == 0   # a0: one-hot, padded
        assert obs[e, 1, :2].sum() == 1 and obs[e, 1, 2:].sum() == 1   # a1: two one-hots
        np.testing.assert_array_equal(state[e], obs[e].reshape(-1))


def test_acting_on_a_dict_with_a_discrete_observation_says_how_to_flatten():
    with pytest.raises(ValueError, match=r"observations\['a0'\] is a single number.*"
                                         r"flatten_observation"):
        observation_dict({"a0": 2, "a1": np.array([0, 1])}, 2, 5)


@pytest.mark.parametrize("algo", ["spn-ac", "vdn", "mappo"])
def test_an_env_with_discrete_observations_trains(algo):
    config = dict(learning_starts=48, batch_size=16) if algo != "mappo" else {}
    result = spnpolicy.train(algo, Signal, seed=0, total_steps=96, num_envs=4,
                             eval_interval=96, eval_episodes=4, progress=False,
                             verbose=False, **config)
    assert result.history[-1]["step"] == 96 and 0.0 <= result.eval["success_rate"] <= 1.0
