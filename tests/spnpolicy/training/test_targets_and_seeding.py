"""Soft target updates and capturing / restoring the global generators."""

import io
import random

import numpy as np
import pytest
import torch
from torch import nn

from factor_q import FactorGraph, FactorQ
from spnpolicy.training import (
    get_rng_state,
    hard_update,
    make_target,
    seed_everything,
    set_rng_state,
    soft_update,
)


def test_soft_update_is_polyak_averaging():
    torch.manual_seed(0)
    source, target = nn.Linear(3, 2), nn.Linear(3, 2)
    expected = [0.25 * s + 0.75 * t for s, t in zip(source.parameters(), target.parameters())]
    soft_update(target, source, 0.25)
    for got, want in zip(target.parameters(), expected):
        torch.testing.assert_close(got, want)
    hard_update(target, source)
    for got, want in zip(target.parameters(), source.parameters()):
        torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="tau"):
        soft_update(target, source, 1.5)
    with pytest.raises(ValueError, match="not copies"):
        soft_update(nn.Linear(3, 2), nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2)), 0.5)


def test_make_target_is_a_frozen_independent_copy_sharing_the_graph():
    graph = FactorGraph.complete(3)
    q = FactorQ(graph, state_dim=4, num_actions=2, hidden=(8,))
    target = make_target(q)
    assert target.graph is graph
    assert all(not p.requires_grad for p in target.parameters())
    with torch.no_grad():
        next(q.parameters()).add_(1.0)
    assert not torch.equal(next(q.parameters()), next(target.parameters()))


def _draws():
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_seed_everything_and_rng_state_round_trip():
    seed_everything(5)
    first = _draws()
    seed_everything(5)
    assert _draws() == first
    stream = io.BytesIO()
    torch.save(get_rng_state(), stream)
    expected = _draws()
    stream.seek(0)
    set_rng_state(torch.load(stream, weights_only=True))
    assert _draws() == expected
    with pytest.raises(ValueError, match="seed"):
        seed_everything(-1)
