"""The brute-force oracle and the circuit generator, checked on their own."""

import math

import numpy as np
from hypothesis import given, settings

from circuits.nodes import Categorical, Product, Sum
from tests.circuits import oracle
from tests.circuits.strategies import random_circuits


def design_example():
    a0 = Categorical(var=0, num_states=3, probs=[.2, .3, .5])
    a1 = Categorical(var=1, num_states=3, support=[0, 2])
    ind = Categorical.indicator(var=1, value=1, num_states=3)
    return Sum([Product([a0, a1]), Product([Categorical(0, 3), ind])], weights=[.4, .6])


def test_oracle_on_hand_computed_example():
    joint = oracle.joint_table(design_example())
    assert joint.shape == (3, 3)
    assert math.isclose(joint[0, 1], .6 / 3)
    assert math.isclose(joint[2, 2], .4 * .5 * .5)
    assert math.isclose(oracle.prob(joint, [-1, 1]), .6)
    np.testing.assert_allclose(oracle.marginals(joint)[1], [.2, .6, .2])
    assert oracle.mpe_set(joint)[1] == {(0, 1), (1, 1), (2, 1)}
    assert math.isclose(oracle.max_product_value(design_example()), .2)
    assert oracle.semantically_deterministic(design_example())
    overlapping = Sum([Product([Categorical(0, 2), Categorical(1, 2)]),
                       Product([Categorical(0, 2), Categorical(1, 2, support=[1])])])
    assert not oracle.semantically_deterministic(overlapping)


@settings(max_examples=60, deadline=None)
@given(random_circuits())
def test_generated_circuits_are_normalised(rc):
    joint = oracle.joint_table(rc.root)
    assert joint.shape == rc.num_states
    assert np.all(joint >= 0)
    assert math.isclose(joint.sum(), 1.0, rel_tol=1e-9)


@settings(max_examples=60, deadline=None)
@given(random_circuits(deterministic=True))
def test_generated_deterministic_circuits_are_deterministic(rc):
    assert oracle.semantically_deterministic(rc.root, rc.num_states)
    best, _ = oracle.mpe_set(oracle.joint_table(rc.root))
    assert math.isclose(oracle.max_product_value(rc.root), best, rel_tol=1e-9)
