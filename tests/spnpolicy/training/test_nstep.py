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
    with pytest.raises(ValueError, match="2 copies' steps.*num_envs=3"):
        NStepAccumulator(3, 2, 0.9).push(_step(0, ended=False))


def test_state_dict_round_trip():
    acc = NStepAccumulator(num_envs=2, n=3, gamma=0.5)
    acc.push(_step(0, ended=False))
    other = NStepAccumulator(num_envs=2, n=3, gamma=0.5)
    other.load_state_dict(acc.state_dict())
    for a, b in zip(acc.push(_step(1, False)) + acc.push(_step(2, False)),
                    other.push(_step(1, False)) + other.push(_step(2, False))):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="2 copies' queues, this accumulator 3"):
        NStepAccumulator(num_envs=3, n=3, gamma=0.5).load_state_dict(acc.state_dict())


def _direct(steps: list[Transition], n: int, gamma: float) -> list[tuple]:
    """The n-step rows of every push, by per-copy queues walked step by step."""
    queues, pushes = [[] for _ in range(len(steps[0].reward))], []
    for tr in steps:
        rows = []
        for e, queue in enumerate(queues):
            queue.append(tuple(f[e] for f in tr[:7]))
            ended = tr.terminated[e] > 0 or tr.truncated[e]
            while queue and (ended or len(queue) == n):
                ret = np.float32(0)
                for i, step in enumerate(queue):
                    ret = ret + np.float32(gamma**i) * step[3]
                first = queue.pop(0)
                rows.append((*first[:3], ret, tr.next_state[e], tr.next_obs[e],
                             tr.terminated[e], len(queue) + 1))
                if not ended:
                    break
        pushes.append(rows)
    return pushes


@pytest.mark.parametrize("seed", range(6))
def test_random_episodes_match_per_copy_queues_in_order(seed):
    rng = np.random.default_rng(seed)
    num_envs, n, gamma = int(rng.integers(1, 6)), int(rng.integers(1, 5)), 0.9
    steps = [Transition(state=rng.normal(size=(num_envs, 3)).astype(np.float32),
                        obs=rng.normal(size=(num_envs, 2, 2)).astype(np.float32),
                        actions=rng.integers(0, 5, (num_envs, 2)),
                        reward=rng.normal(size=num_envs).astype(np.float32),
                        next_state=rng.normal(size=(num_envs, 3)).astype(np.float32),
                        next_obs=rng.normal(size=(num_envs, 2, 2)).astype(np.float32),
                        terminated=(rng.random(num_envs) < 0.15).astype(np.float32),
                        truncated=rng.random(num_envs) < 0.1) for _ in range(40)]
    acc, resumed = NStepAccumulator(num_envs, n, gamma), None
    for t, (tr, want) in enumerate(zip(steps, _direct(steps, n, gamma))):
        if t == 20:                                    # a checkpoint round trip midway
            resumed = NStepAccumulator(num_envs, n, gamma)
            resumed.load_state_dict(acc.state_dict())
            acc = resumed
        got = acc.push(tr)
        assert len(got.state) == len(want)
        for field, column in zip(got, zip(*want) if want else [[]] * 8):
            np.testing.assert_array_equal(field, np.array(column).reshape(field.shape))
    assert resumed is not None
