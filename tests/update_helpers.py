"""Helpers for the tests that check one algorithm update against a hand computation (import
as ``tests.update_helpers``): random replay batches, and target networks moved apart from
the online ones, so that a target read from the wrong network shows."""

import torch

from spnpolicy.training import Batch


def random_batch(envs, size: int = 8, seed: int = 0) -> Batch:
    """``size`` random transitions of ``envs``' shapes (states, observations, joint actions,
    rewards), none terminated, each one step long."""
    g = torch.Generator().manual_seed(seed)
    n, state_dim, obs_dim = envs.num_agents, envs.state_dim, envs.obs_dim
    return Batch(state=torch.randn(size, state_dim, generator=g),
                 actions=torch.randint(0, envs.num_actions, (size, n), generator=g),
                 reward=torch.randn(size, generator=g),
                 next_state=torch.randn(size, state_dim, generator=g),
                 terminated=torch.zeros(size), steps=torch.ones(size, dtype=torch.int64),
                 obs=torch.randn(size, n, obs_dim, generator=g),
                 next_obs=torch.randn(size, n, obs_dim, generator=g))


@torch.no_grad()
def move_apart(*modules: torch.nn.Module, scale: float = 0.5, seed: int = 1) -> None:
    """Add Gaussian noise of std ``scale`` to every parameter of ``modules`` (target networks,
    equal to their online copies when built)."""
    g = torch.Generator().manual_seed(seed)
    for module in modules:
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
