"""The vectorised-env protocol: both adapters, auto-reset, team rewards, exact restore."""

import numpy as np
import pytest
from gymnasium import spaces
from pettingzoo import ParallelEnv

import spnpolicy
from spnpolicy.envs import CoverageVecEnv, make_env
from spnpolicy.training import CoverageVec, ParallelEnvVec, make_vec_env
from spnpolicy.training.vec_env import global_state

SMALL = dict(num_agents=3, grid_size=4, max_steps=6)


def _play(envs, steps, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        actions = rng.integers(0, envs.num_actions, size=(envs.num_envs, envs.num_agents))
        out.append(envs.step(actions))
    return out


def test_coverage_adapter_matches_the_vectorised_env():
    adapter, raw = CoverageVec(4, seed=3, **SMALL), CoverageVecEnv(4, seed=3, **SMALL)
    state, obs = adapter.reset()
    np.testing.assert_array_equal(obs, raw.reset())
    np.testing.assert_array_equal(state, raw.state())
    rng = np.random.default_rng(0)
    for _ in range(20):
        actions = rng.integers(0, 6, size=(4, 3))
        out = adapter.step(actions)
        obs, reward, term, trunc, info = raw.step(actions)
        np.testing.assert_array_equal(out.obs, obs)
        np.testing.assert_array_equal(out.state, raw.state())
        np.testing.assert_array_equal(out.final_state, info["final_state"])
        np.testing.assert_array_equal(out.reward, reward)
        np.testing.assert_array_equal(out.terminated, term)
        np.testing.assert_array_equal(out.truncated, trunc)
        np.testing.assert_array_equal(out.success, info["success"])
        np.testing.assert_array_equal(adapter.settled(), raw.settled())


@pytest.mark.parametrize("make", [
    lambda: make_vec_env("coverage", 3, seed=1, **SMALL),
    lambda: ParallelEnvVec(lambda: make_env("coverage", **SMALL), 3, seed=1),
], ids=["CoverageVec", "ParallelEnvVec"])
def test_state_dict_restores_exactly(make):
    envs = make()
    envs.reset()
    _play(envs, 9, seed=0)
    saved = envs.state_dict()
    continued = _play(envs, 15, seed=1)
    fresh = make()
    state, obs = fresh.load_state_dict(saved)
    assert state.shape == (3, fresh.state_dim) and obs.shape == (3, 3, fresh.obs_dim)
    for a, b in zip(continued, _play(fresh, 15, seed=1)):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


def test_parallel_adapter_on_a_matrix_game():
    envs = make_vec_env("climbing", 2, seed=0)
    assert (envs.num_agents, envs.num_actions, envs.state_dim, envs.obs_dim) == (2, 3, 1, 1)
    state, obs = envs.reset()
    out = envs.step(np.array([[0, 0], [0, 1]]))
    np.testing.assert_array_equal(out.reward, [11.0, -30.0])
    np.testing.assert_array_equal(out.terminated, [True, True])
    np.testing.assert_array_equal(out.success, [True, False])
    assert envs.has_success
    np.testing.assert_array_equal(out.state, state)  # auto-reset to the constant state


class _TwoAgents(ParallelEnv):
    """Agents get rewards 1 and 3, no team_reward, no state(); 2-step episodes."""

    metadata = {"name": "two_agents"}

    def __init__(self):
        self.possible_agents = ["a", "b"]
        self.agents = []

    def observation_space(self, agent):
        return spaces.Box(0, 1, (2,) if agent == "a" else (1,), np.float32)

    def action_space(self, agent):
        return spaces.Discrete(4)

    def reset(self, seed=None, options=None):
        self.agents, self.t = list(self.possible_agents), 0
        return self._obs(), {a: {} for a in self.agents}

    def _obs(self):
        return {"a": np.array([self.t, 1], np.float32), "b": np.array([0.5], np.float32)}

    def step(self, actions):
        self.t += 1
        done = self.t >= 2
        rewards = {"a": 1.0, "b": 3.0}
        obs = self._obs()
        if done:
            self.agents = []
        return obs, rewards, dict.fromkeys(rewards, False), dict.fromkeys(rewards, done), \
            {"a": {}, "b": {}}


def test_parallel_adapter_conventions_without_team_reward_or_state():
    envs = ParallelEnvVec(_TwoAgents, 2, seed=0)
    assert (envs.obs_dim, envs.state_dim) == (2, 4)  # padded obs; state = all obs
    state, obs = envs.reset()
    np.testing.assert_array_equal(obs[0], [[0, 1], [0.5, 0]])
    np.testing.assert_array_equal(state[0], [0, 1, 0.5, 0])
    first = envs.step(np.zeros((2, 2), dtype=int))
    np.testing.assert_array_equal(first.reward, [2.0, 2.0])  # mean of the agents' rewards
    second = envs.step(np.zeros((2, 2), dtype=int))
    np.testing.assert_array_equal(second.truncated, [True, True])
    np.testing.assert_array_equal(second.terminated, [False, False])
    np.testing.assert_array_equal(second.final_state[0], [2, 1, 0.5, 0])
    np.testing.assert_array_equal(second.state[0], [0, 1, 0.5, 0])
    assert not envs.has_success


class _Unseeded(_TwoAgents):
    """Episodes of 1 to 6 steps whose length ignores the reset seed."""

    rng = np.random.default_rng(0)       # shared by every copy: not the reset seed's

    def reset(self, seed=None, options=None):
        self.length = int(self.rng.integers(1, 7))
        return super().reset(seed, options)

    def step(self, actions):
        self.t += 1
        done = self.t >= self.length
        if done:
            self.agents = []
        flags = dict.fromkeys(self.possible_agents, done)
        return self._obs(), dict.fromkeys(flags, 1.0), dict.fromkeys(flags, False), flags, \
            {a: {} for a in flags}


def test_an_env_that_does_not_repeat_its_episodes_cannot_be_restored_and_says_why():
    envs = ParallelEnvVec(_Unseeded, 8, seed=0)
    envs.reset()
    saved = None
    for _ in range(3):
        envs.step(np.zeros((8, 2), dtype=int))
        if any(len(h) >= 2 for h in envs.state_dict()["history"]):
            saved = envs.state_dict()
            break
    assert saved is not None
    with pytest.raises(RuntimeError, match=r"cannot rebuild env copy \d+ of the checkpoint: "
                                           r"replaying its episode from the seed ended after"):
        for _ in range(20):               # some copy's replay ends early on some attempt
            ParallelEnvVec(_Unseeded, 8, seed=0).load_state_dict(saved)


class _Heterogeneous(_TwoAgents):
    """Agent a has Discrete(2, start=3), b Discrete(4); records the actions it executes."""

    def action_space(self, agent):
        return spaces.Discrete(2, start=3) if agent == "a" else spaces.Discrete(4)

    def step(self, actions):
        assert self.action_space("a").contains(actions["a"])
        self.executed = dict(actions)
        return super().step(actions)


def test_agents_with_fewer_actions_repeat_theirs():
    envs = ParallelEnvVec(_Heterogeneous, 4, seed=0)
    assert envs.num_actions == 4
    envs.reset()
    envs.step(np.array([[0, 0], [1, 1], [2, 2], [3, 3]]))
    assert [env.executed for env in envs.envs] == [
        {"a": 3, "b": 0}, {"a": 4, "b": 1}, {"a": 3, "b": 2}, {"a": 4, "b": 3}]


def test_speaker_listener_trains_with_its_3_and_5_actions():
    pytest.importorskip("mpe2")
    envs = make_vec_env("mpe/simple_speaker_listener", 2, seed=0)
    assert envs.num_actions == 5        # the speaker's 3 say something, its 3 and 4 repeat 0, 1
    result = spnpolicy.train("vdn", "mpe/simple_speaker_listener", seed=0, total_steps=64,
                             env_kwargs=dict(max_cycles=8), num_envs=4, learning_starts=32,
                             batch_size=8, hidden=(16,), eval_interval=64, eval_episodes=2,
                             progress=False, verbose=False)
    assert result.history[-1]["step"] == 64


def test_global_state_is_the_adapters_state_for_a_single_env():
    """What `spnpolicy query` feeds a policy equals what training fed it."""
    env = _TwoAgents()
    observations, _ = env.reset(seed=3)
    np.testing.assert_array_equal(global_state(env, observations), [0, 1, 0.5, 0])
    climbing = make_env("climbing")
    observations, _ = climbing.reset(seed=0)
    np.testing.assert_array_equal(global_state(climbing, observations),
                                  make_vec_env("climbing", 1, seed=0).reset()[0][0])


def test_bad_actions_and_names():
    envs = make_vec_env("climbing", 2, seed=0)
    envs.reset()
    with pytest.raises(ValueError, match=r"shape \(2, 2\)"):
        envs.step(np.zeros((2, 3), dtype=int))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        envs.step(np.full((2, 2), 3))
    with pytest.raises(ValueError, match="unknown env"):
        make_vec_env("nope", 2)
    with pytest.raises(ValueError, match="num_envs"):
        ParallelEnvVec(_TwoAgents, 0)


@pytest.mark.parametrize("field, where, named", [("reward", 1, "reward"),
                                                  ("obs", 0, "reset state"),
                                                  ("obs", 2, "state")])
def test_non_finite_rewards_and_observations_are_named(field, where, named):
    # NaN rewards trained silently into NaN losses (vdn, spn-ac) or a torch sampling error
    class Broken(_TwoAgents):
        def _obs(self):
            obs = super()._obs()
            if field == "obs" and self.t == where:
                obs["b"] = np.array([np.nan], np.float32)
            return obs

        def step(self, actions):
            obs, rewards, terms, truncs, infos = super().step(actions)
            if field == "reward":
                rewards["a"] = float("inf")
            return obs, rewards, terms, truncs, infos

    envs = ParallelEnvVec(Broken, 2, seed=0)
    # no state(): the state is the observations, so a NaN observation is a NaN state first
    with pytest.raises(ValueError, match=rf"non-finite {named} \(NaN or inf\) in env copies "
                                         r"\[0, 1\]"):
        envs.reset()
        for _ in range(3):
            envs.step(np.zeros((2, 2), dtype=int))


@pytest.mark.parametrize("env, kwargs", [("climbing", {}),
                                         ("predator-prey", dict(num_agents=2, grid_size=5))])
def test_envs_without_per_agent_progress_report_no_settled_agents(env, kwargs):
    envs = make_vec_env(env, 2, seed=0, **kwargs)
    envs.reset(seed=0)
    assert envs.settled() is None
