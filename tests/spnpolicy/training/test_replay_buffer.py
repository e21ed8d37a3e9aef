"""ReplayBuffer: storage, FIFO overwrite, sampling, checkpoint round trip."""

import io

import numpy as np
import pytest
import torch

from spnpolicy.training import ReplayBuffer, Transition


def _transition(start, rows=3, n=2, state_dim=4, obs_dim=None):
    values = np.arange(start, start + rows, dtype=np.float32)
    obs = (np.zeros((rows, n, obs_dim), np.float32) + values[:, None, None]
           if obs_dim else np.zeros((rows, n, 1), np.float32))
    return Transition(state=np.repeat(values[:, None], state_dim, 1), obs=obs,
                      actions=np.repeat(values[:, None], n, 1).astype(np.int64), reward=values,
                      next_state=np.repeat(values[:, None] + 0.5, state_dim, 1), next_obs=obs,
                      terminated=(values % 2).astype(np.float32),
                      truncated=np.zeros(rows, bool))


def test_sampled_rows_are_stored_transitions():
    buffer = ReplayBuffer(100, state_dim=4, num_agents=2, seed=0)
    buffer.add(_transition(0, rows=10))
    batch = buffer.sample(64)
    assert batch.state.shape == (64, 4) and batch.actions.dtype == torch.int64
    assert batch.obs is None and batch.next_obs is None
    r = batch.reward
    torch.testing.assert_close(batch.state[:, 0], r)
    torch.testing.assert_close(batch.next_state[:, 0], r + 0.5)
    torch.testing.assert_close(batch.actions[:, 1].float(), r)
    torch.testing.assert_close(batch.terminated, r % 2)
    assert set(r.tolist()) <= set(range(10))


def test_fifo_overwrites_the_oldest():
    buffer = ReplayBuffer(5, state_dim=4, num_agents=2, seed=0)
    for start in range(0, 12, 3):
        buffer.add(_transition(start))
    assert len(buffer) == 5
    assert set(buffer.sample(500).reward.tolist()) == {7.0, 8.0, 9.0, 10.0, 11.0}


def test_observations_are_stored_when_asked():
    buffer = ReplayBuffer(10, state_dim=4, num_agents=2, obs_dim=3, seed=0)
    buffer.add(_transition(0, obs_dim=3))
    batch = buffer.sample(8)
    assert batch.obs.shape == (8, 2, 3)
    torch.testing.assert_close(batch.obs[:, 0, 0], batch.reward)


def test_state_dict_round_trip_with_weights_only_load():
    buffer = ReplayBuffer(50, state_dim=4, num_agents=2, seed=1)
    buffer.add(_transition(0, rows=20))
    buffer.sample(7)
    stream = io.BytesIO()
    torch.save(buffer.state_dict(), stream)
    stream.seek(0)
    restored = ReplayBuffer(50, state_dim=4, num_agents=2, seed=99)
    restored.load_state_dict(torch.load(stream, weights_only=True))
    assert (len(restored), restored.pos) == (20, 20)
    for a, b in zip(buffer.sample(16), restored.sample(16)):
        if a is not None:
            torch.testing.assert_close(a, b)


def test_errors():
    buffer = ReplayBuffer(10, state_dim=4, num_agents=2)
    with pytest.raises(ValueError, match="empty"):
        buffer.sample(1)
    with pytest.raises(ValueError, match=r"transition.state must have shape \[3, 4\]"):
        buffer.add(_transition(0, state_dim=5))
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(0, state_dim=4, num_agents=2)
    small = ReplayBuffer(5, state_dim=4, num_agents=2)
    big = ReplayBuffer(50, state_dim=4, num_agents=2)
    big.add(_transition(0, rows=20))
    with pytest.raises(ValueError, match="more than capacity"):
        small.load_state_dict(big.state_dict())
