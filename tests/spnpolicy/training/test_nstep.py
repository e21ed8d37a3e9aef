"""n-step transitions against a direct computation."""

import numpy as np
import pytest

from spnpolicy.training import NStepAccumulator, ReplayBuffer, Transition


def _step(t, ended):
    """Two copies; copy 1's episode ends where ``ended``; reward = t + 1 for copy 0, 10 (t+1)."""
    return Transition(state=np.array([[t], [10 * t]], np.float32),
                      obs=np.zeros((2, 1, 1), np.float32), actions=np.zeros((2, 1), np.int64),
                      reward=np.array([t + 1, 10 * (t + 1)], np.float32),
                      next_state=np.array([[t + 1], [10 * (t + 1)]], np.float32),
                      next_obs=np.zeros((2, 1, 1), np.float32),
                      terminated=np.array([0, float(ended)], np.float32),
                      truncated=np.zeros(2, bool))


def test_returns_horizons_and_flush_at_episode_end():
    acc = NStepAccumulator(num_envs=2, n=3, gamma=0.5)
    out = [acc.push(_step(t, ended=(t == 3))) for t in range(5)]
    assert [len(o.state) for o in out] == [0, 0, 2, 4, 1]
    first = out[2]  # copy 0 and copy 1 from t=0, three steps each
    np.testing.assert_allclose(first.reward, [1 + 0.5 * 2 + 0.25 * 3, 10 + 5 * 2 + 2.5 * 3])
    np.testing.assert_array_equal(first.steps, [3, 3])
    np.testing.assert_array_equal(first.next_state[:, 0], [3, 30])
    flushed = out[3]  # copy 0 from t=1; copy 1 ended at t=3: t=1, 2, 3 flushed
    np.testing.assert_array_equal(flushed.state[:, 0], [1, 10, 20, 30])
    np.testing.assert_array_equal(flushed.steps, [3, 3, 2, 1])
    np.testing.assert_array_equal(flushed.terminated, [0, 1, 1, 1])
    np.testing.assert_allclose(flushed.reward, [2 + 1.5 + 1, 20 + 15 + 10, 30 + 20, 40])
    np.testing.assert_array_equal(flushed.next_state[1:, 0], [40, 40, 40])


def test_one_step_is_the_identity_and_buffer_stores_steps():
    acc = NStepAccumulator(num_envs=2, n=1, gamma=0.9)
    out = acc.push(_step(0, ended=False))
    np.testing.assert_array_equal(out.reward, [1, 10])
    buffer = ReplayBuffer(10, state_dim=1, num_agents=1, seed=0)
    buffer.add(out)
    buffer.add(_step(1, ended=False))  # a plain Transition counts one step
    assert set(buffer.sample(50).steps.tolist()) == {1}
    with pytest.raises(ValueError, match="n must be"):
        NStepAccumulator(2, 0, 0.9)


def test_state_dict_round_trip():
    acc = NStepAccumulator(num_envs=2, n=3, gamma=0.5)
    acc.push(_step(0, ended=False))
    other = NStepAccumulator(num_envs=2, n=3, gamma=0.5)
    other.load_state_dict(acc.state_dict())
    for a, b in zip(acc.push(_step(1, False)) + acc.push(_step(2, False)),
                    other.push(_step(1, False)) + other.push(_step(2, False))):
        np.testing.assert_array_equal(a, b)
