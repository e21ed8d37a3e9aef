"""The on-policy return estimators and rollout storage against plain reference loops."""

import numpy as np
import pytest
import torch

from spnpolicy.training.onpolicy import RolloutStorage, gae_advantages, nstep_returns
from spnpolicy.training.runner import Transition


def _episode_data(T=7, E=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    reward = torch.randn(T, E, generator=g)
    value = torch.randn(T, E, generator=g)
    next_value = torch.randn(T, E, generator=g)
    terminated = (torch.rand(T, E, generator=g) < 0.2).float()
    truncated = (torch.rand(T, E, generator=g) < 0.2).float()
    done = torch.maximum(terminated, truncated)
    return reward, value, next_value, terminated, done


def test_nstep_returns_by_hand():
    """One copy, 4 steps, n=2, gamma=0.5: step 1 terminates, step 2 is truncated."""
    reward = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    next_value = torch.tensor([[10.0], [20.0], [30.0], [40.0]])
    terminated = torch.tensor([[0.0], [1.0], [0.0], [0.0]])
    done = torch.tensor([[0.0], [1.0], [1.0], [0.0]])
    got = nstep_returns(reward, next_value, terminated, done, gamma=0.5, n=2)
    expected = [1 + 0.5 * 2,            # t=0: r0 + g r1, episode terminated at 1
                2.0,                    # t=1: terminated, no bootstrap
                3 + 0.5 * 30,           # t=2: truncated: bootstrap from its final state
                4 + 0.5 * 40]           # t=3: rollout ends: bootstrap
    assert got[:, 0].tolist() == pytest.approx(expected)


def test_nstep_returns_full_window_and_per_agent_values():
    reward = torch.tensor([[1.0], [1.0], [1.0]])
    next_value = torch.tensor([[[5.0, 6.0]], [[7.0, 8.0]], [[9.0, 10.0]]])   # [T, E, n=2]
    zeros = torch.zeros(3, 1)
    got = nstep_returns(reward, next_value, zeros, zeros, gamma=0.9, n=2)
    assert got.shape == (3, 1, 2)
    assert got[0, 0].tolist() == pytest.approx([1 + 0.9 + 0.81 * 7, 1 + 0.9 + 0.81 * 8])
    assert got[2, 0].tolist() == pytest.approx([1 + 0.9 * 9, 1 + 0.9 * 10])


def _gae_reference(reward, value, next_value, terminated, done, gamma, lam):
    """A_t = sum_l (gamma lam)^l delta_{t+l}, the sum cut after the first done step."""
    T, E = reward.shape
    out = np.zeros((T, E))
    for e in range(E):
        for t in range(T):
            total, weight = 0.0, 1.0
            for j in range(t, T):
                delta = (reward[j, e] + gamma * (1 - terminated[j, e]) * next_value[j, e]
                         - value[j, e])
                total += weight * float(delta)
                if done[j, e]:
                    break
                weight *= gamma * lam
            out[t, e] = total
    return out


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("lam", [0.0, 0.7, 1.0])
def test_gae_equals_plain_loop(seed, lam):
    reward, value, next_value, terminated, done = _episode_data(seed=seed)
    got = gae_advantages(reward, value, next_value, terminated, done, 0.9, lam)
    expected = _gae_reference(reward, value, next_value, terminated, done, 0.9, lam)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_lambda_one_return_is_the_nstep_return_over_the_rollout(seed):
    """GAE(lambda=1) + V is the return to the episode or rollout end: n-step with n >= T,
    when the values are consistent (``value[t+1]`` is ``next_value[t]`` within an episode)."""
    reward, value, next_value, terminated, done = _episode_data(seed=seed)
    value[1:] = torch.where(done[:-1] == 0, next_value[:-1], value[1:])
    lam_return = value + gae_advantages(reward, value, next_value, terminated, done, 0.95, 1.0)
    nstep = nstep_returns(reward, next_value, terminated, done, 0.95, n=reward.shape[0])
    torch.testing.assert_close(lam_return, nstep)


def _transition(t, E=2, n=2, done_rows=()):
    truncated = np.zeros(E, dtype=bool)
    truncated[list(done_rows)] = True
    return Transition(state=np.full((E, 3), t, np.float32), obs=np.full((E, n, 4), t, np.float32),
                      actions=np.full((E, n), t, np.int64), reward=np.full(E, t, np.float32),
                      next_state=np.full((E, 3), t + 1, np.float32),
                      next_obs=np.full((E, n, 4), t + 1, np.float32),
                      terminated=np.zeros(E, np.float32), truncated=truncated)


def test_rollout_storage_next_actions():
    """Next actions are the ones taken next within an episode, else drawn at next_state."""
    storage = RolloutStorage()
    for t in range(3):
        storage.add(_transition(t, done_rows=(1,) if t == 0 else ()))
    draws = []

    def draw(next_state, next_obs):
        draws.append((next_state.shape, next_obs.shape))
        return torch.full((next_state.shape[0], 2), 9, dtype=torch.int64)

    rollout = storage.rollout(step=40, draw=draw)
    assert len(storage) == 0 and rollout.step == 40
    assert draws == [((6, 3), (6, 2, 4))]
    assert rollout.state.shape == (3, 2, 3) and rollout.obs.shape == (3, 2, 2, 4)
    assert rollout.done[:, 1].tolist() == [1.0, 0.0, 0.0]
    assert rollout.next_actions[0, 0].tolist() == [1, 1]   # taken at t=1
    assert rollout.next_actions[0, 1].tolist() == [9, 9]   # episode ended: drawn
    assert rollout.next_actions[1, 0].tolist() == [2, 2]
    assert rollout.next_actions[2].tolist() == [[9, 9], [9, 9]]  # rollout end: drawn
