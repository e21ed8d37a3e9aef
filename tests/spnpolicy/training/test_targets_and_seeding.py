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
from spnpolicy.training.targets import Polyak


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


def test_polyak_pair_tracks_its_modules_through_a_checkpoint_load():
    """A kept :class:`Polyak` pair gives soft_update's numbers, buffers included, and still
    acts on the modules after ``load_state_dict`` (which copies into their tensors)."""
    torch.manual_seed(0)
    source = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    target, reference = make_target(source), make_target(source)
    polyak = Polyak(target, source)
    for _ in range(3):
        with torch.no_grad():
            for p in source.parameters():
                p.add_(torch.randn_like(p))
        source(torch.randn(5, 3))                     # moves the batch-norm buffers
        polyak(0.3)
        soft_update(reference, source, 0.3)
        for got, want in zip(target.state_dict().values(), reference.state_dict().values()):
            assert torch.equal(got, want)
    saved = io.BytesIO()
    torch.save(make_target(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))).state_dict(), saved)
    saved.seek(0)
    target.load_state_dict(torch.load(saved, weights_only=True))
    reference.load_state_dict(target.state_dict())
    polyak(1.0)
    hard_update(reference, source)
    for got, want in zip(target.state_dict().values(), reference.state_dict().values()):
        assert torch.equal(got, want)
    with pytest.raises(ValueError, match="tau"):
        polyak(-0.1)
    with pytest.raises(ValueError, match="buffers"):
        Polyak(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)),
               nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)))


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
