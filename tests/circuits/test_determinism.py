"""Structural determinism: exact on structured circuits (one variable tree), sound on all,
and linear in the edges (wide selective circuits validate quickly)."""

import random

import pytest
from hypothesis import given

from circuits import Categorical, Circuit, Product, Sum
from circuits.structures import selective
from tests.circuits import oracle
from tests.circuits.helpers import PROPERTY
from tests.circuits.strategies import random_circuits


def structured(seed: int) -> Sum:
    """A random circuit over a balanced variable tree: every node over a scope decomposes it
    the same way, leaves have random supports (often shared or overlapping), sums take
    random subsets of their region's products and sums (so determinism varies)."""
    rng = random.Random(seed)
    n = rng.randint(2, 5)
    ks = [rng.randint(1, 3) for _ in range(n)]

    def region(variables):
        if len(variables) == 1:
            (v,) = variables
            out = []
            for _ in range(rng.randint(1, 3)):
                support = rng.sample(range(ks[v]), rng.randint(1, ks[v]))
                out.append(Categorical(v, ks[v], support=support))
            return out
        half = len(variables) // 2
        left, right = region(variables[:half]), region(variables[half:])
        nodes = [Product([rng.choice(left), rng.choice(right)]) for _ in range(rng.randint(1, 4))]
        for _ in range(rng.randint(0, 3)):
            nodes.append(Sum(rng.sample(nodes, rng.randint(1, min(3, len(nodes))))))
        return rng.sample(nodes, rng.randint(1, len(nodes)))

    top = region(list(range(n)))
    return Sum(rng.sample(top, rng.randint(1, len(top))))


@pytest.mark.parametrize("seed", range(300))
def test_exact_on_structured_circuits(seed):
    root = structured(seed)
    assert Circuit(root).is_deterministic == oracle.semantically_deterministic(root)


@PROPERTY
@given(random_circuits())
def test_sound_on_random_circuits(rc):
    if Circuit(rc.root).is_deterministic:
        assert oracle.semantically_deterministic(rc.root, rc.num_states)


@PROPERTY
@given(random_circuits(deterministic=True))
def test_split_sums_are_recognised(rc):
    assert Circuit(rc.root).is_deterministic


def test_overlap_deep_below_aligned_products_is_found():
    """Two children of the root differ only in a right factor whose supports overlap."""
    a = Categorical.indicator(0, 0, 2)
    right = Sum([Product([Categorical.indicator(1, 0, 2), Categorical(2, 2)]),
                 Product([Categorical.indicator(1, 1, 2), Categorical.indicator(2, 0, 2)])])
    other = Product([Categorical(1, 2), Categorical.indicator(2, 1, 2)])
    root = Sum([Product([a, right]), Product([a, other])])
    assert oracle.semantically_deterministic(root) is False
    assert not Circuit(root).is_deterministic


@pytest.mark.parametrize("args", [(16, 6, 64), (500, 6, 8)])
def test_wide_selective_circuits_are_deterministic(args):
    assert selective(*args).is_deterministic
