"""Runner: transitions, auto-reset bookkeeping and episode statistics."""

import numpy as np
import pytest

from spnpolicy.training import Runner, make_vec_env


def test_transitions_and_episodes_on_coverage():
    envs = make_vec_env("coverage", 2, seed=0, num_agents=2, grid_size=3, max_steps=4,
                        reward="coverage")
    runner = Runner(envs)
    with pytest.raises(RuntimeError, match="reset"):
        runner.step(np.zeros((2, 2), dtype=int))
    runner.reset(seed=0)
    rewards = []
    for t in range(8):
        np.testing.assert_array_equal(runner.elapsed, [t % 4] * 2)
        before = runner.state.copy()
        tr = runner.step(np.full((2, 2), 5))  # stay
        np.testing.assert_array_equal(tr.state, before)
        rewards.append(tr.reward)
        if t % 4 == 3:  # truncated: next_state is the episode's last state, not the new one
            assert tr.truncated.all() and not tr.terminated.any()
            assert not np.array_equal(tr.next_state, runner.state)
        else:
            np.testing.assert_array_equal(tr.next_state, runner.state)
    episodes = runner.pop_episodes()
    assert [(ep.env_index, ep.length) for ep in episodes] == [(0, 4), (1, 4)] * 2
    rewards = np.array(rewards)
    np.testing.assert_allclose([ep.ret for ep in episodes],
                               [rewards[:4, 0].sum(), rewards[:4, 1].sum(),
                                rewards[4:, 0].sum(), rewards[4:, 1].sum()], rtol=1e-6)
    assert runner.pop_episodes() == [] and runner.env_steps == 16


def test_state_dict_keeps_episodes_in_flight():
    def make():
        runner = Runner(make_vec_env("climbing", 2, seed=0, episode_length=3))
        runner.reset(seed=0)
        return runner

    runner = make()
    runner.step(np.zeros((2, 2), dtype=int))
    saved = runner.state_dict()
    other = make()
    other.load_state_dict(saved)
    for r in (runner, other):
        r.step(np.zeros((2, 2), dtype=int))
        r.step(np.zeros((2, 2), dtype=int))
    episodes = runner.pop_episodes()
    assert episodes == other.pop_episodes()
    assert [(ep.ret, ep.length, ep.success) for ep in episodes] == [(33.0, 3, True)] * 2


def test_branch_copies_states_and_leaves_the_target_copies_episodes_out():
    envs = make_vec_env("coverage", 4, seed=0, num_agents=2, grid_size=3, max_steps=3,
                        reward="coverage")
    runner = Runner(envs)
    runner.reset(seed=0)
    with pytest.raises(ValueError, match="disjoint"):
        runner.branch(np.array([0]), np.array([0]))
    previous = runner.step(np.zeros((4, 2), dtype=int))
    next_state = previous.next_state.copy()
    runner.branch(np.array([0, 1]), np.array([2, 3]))
    np.testing.assert_array_equal(previous.next_state, next_state)
    np.testing.assert_array_equal(runner.state[2:], runner.state[:2])
    np.testing.assert_array_equal(runner.obs[2:], runner.obs[:2])
    np.testing.assert_array_equal(runner.state, envs.env.state())
    np.testing.assert_array_equal(runner.elapsed, [1, 1, 1, 1])
    for _ in range(5):
        runner.step(np.full((4, 2), 5))
    assert sorted({ep.env_index for ep in runner.pop_episodes()}) == [0, 1]
