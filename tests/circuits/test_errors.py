"""Bad input to queries: a ValueError naming the argument, what was expected and what was given."""

import math
import re

import pytest
import torch

from circuits import Categorical, Circuit, CircuitError, NotDeterministicError, Product, Sum
from circuits.structures import mixture, selective


@pytest.fixture
def c() -> Circuit:
    """Three variables with 3, 2 and 4 states; var 0 can never be 2."""
    root = Sum([Product([Categorical(0, 3, support=[0, 1]), Categorical(1, 2), Categorical(2, 4)]),
                Product([Categorical.indicator(0, 1, 3), Categorical(1, 2, probs=[.3, .7]),
                         Categorical(2, 4)])], weights=[.5, .5])
    return Circuit(root).double()


def raises(arg: str, *given, exc=ValueError):
    """``pytest.raises`` whose message must contain the argument name as a word and ``given``."""
    pattern = rf"(?s)\b{re.escape(arg)}\b" + "".join(rf"(?=.*{re.escape(g)})" for g in given)
    return pytest.raises(exc, match=pattern)


def test_log_prob_rejects_wrong_last_dimension(c):
    with raises("value", "3", "[2, 4]"):
        c.distribution().log_prob(torch.zeros(2, 4, dtype=torch.long))
    with raises("value", "3", "[2]"):
        c.log_prob(torch.zeros(2, dtype=torch.long))


@pytest.mark.parametrize("bad, var, given", [(2, 1, "2"), (4, 2, "4"), (-2, 0, "-2")])
def test_log_prob_rejects_states_out_of_range_for_that_variable(c, bad, var, given):
    x = torch.zeros(1, 3, dtype=torch.long)
    x[0, var] = bad
    with raises("value", given, f"variable {var}"):
        c.log_prob(x)


def test_log_prob_rejects_float_assignments(c):
    with raises("value", "dtype"):
        c.log_prob(torch.zeros(1, 3))


def test_log_prob_of_a_zero_probability_assignment_is_minus_inf(c):
    assert c.log_prob(torch.tensor([[2, 0, 0], [2, -1, -1]])).tolist() == [-math.inf, -math.inf]


def test_batched_log_prob_rejects_mismatched_batch_shape(c):
    d = c.distribution(torch.zeros(3, c.num_params, dtype=torch.float64))
    with raises("value", "[4, 3]"):
        d.log_prob(torch.zeros(4, 3, dtype=torch.long))


def test_condition_rejects_bad_evidence(c):
    with raises("evidence", "[4]"):
        c.condition(torch.tensor([0, 0, 0, 0]))
    with raises("evidence", "5"):
        c.condition(torch.tensor([0, 0, 5]))
    with raises("evidence", "dtype"):
        c.condition(torch.tensor([0.0, 0.0, 1.0]))


def test_zero_probability_evidence(c):
    impossible = torch.tensor([2, -1, -1])
    with raises("evidence", "probability"):
        c.condition(impossible)
    with raises("evidence"):
        c.sample(10, evidence=impossible)
    with raises("evidence"):
        c.mpe(impossible)


def test_leave_one_out_needs_complete_assignments(c):
    with raises("value", "-1"):
        c.leave_one_out_log_prob(torch.tensor([0, -1, 1]))
    with raises("value", "[2]"):
        c.leave_one_out_log_prob(torch.tensor([0, 1]))


def test_params_of_the_wrong_shape(c):
    with raises("params", str(c.num_params), str([2, c.num_params + 1])):
        c.distribution(torch.zeros(2, c.num_params + 1))
    with raises("params", "float", "int64"):
        c.distribution(torch.zeros(2, c.num_params, dtype=torch.long))


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_or_infinite_params(c, bad):
    params = torch.zeros(2, c.num_params)
    params[1, 0] = bad
    with raises("params", "NaN"):
        c.distribution(params)


def test_scopes_must_be_pairs_or_triples_of_distinct_variables(c):
    for scopes in ([(0,)], [(0, 1, 2, 0)], [(0, 1), (0, 1, 2)], [(0, 0)], [(0, 3)], []):
        with raises("scopes"):
            c.scope_marginals(scopes)


def test_entropy_of_a_non_deterministic_circuit():
    c = mixture(3, 2, 2)
    with pytest.raises(NotDeterministicError, match="determinis") as info:
        c.entropy()
    assert isinstance(info.value, ValueError)
    params = torch.zeros(2, c.num_params)
    with pytest.raises(NotDeterministicError):
        c.distribution(params).entropy()


def test_sample_rejects_a_bad_count():
    c = selective(3, 2, width=2)
    with raises("num_samples", "-1"):
        c.sample(-1)


def test_a_parameter_group_of_all_minus_inf_is_rejected(c):
    params = torch.zeros(3, c.num_params)
    root_weights = [j for j in range(c.num_params) if int(c._plans[torch.device("cpu")].param_node[j]) >= 0]
    params[2, root_weights] = -math.inf
    with raises("params", "-inf", "row 2", "zero total mass"):
        c.distribution(params)
    with torch.no_grad():
        c.logits[root_weights] = -math.inf
    with raises("logits", "-inf", "zero total mass"):
        c.marginals()


def test_nan_params_name_the_argument_and_the_rows():
    c = selective(3, 2, width=2)
    params = torch.zeros(4, c.num_params)
    params[1] = math.nan
    params[3, 0] = math.nan
    with raises("params", "distribution(params)", "2 batch row(s)", "[1, 0]", "[4, "):
        c.distribution(params)


def test_support_must_be_integer_states():
    for bad in ([1.7], [True], "01", [0, 0.5]):
        with raises("support", repr(bad), exc=CircuitError):
            Categorical(0, 3, support=bad)
    assert Categorical(0, 3, support=torch.tensor([2, 0])).support == (0, 2)


def test_circuit_dtype_by_name_or_a_clear_error():
    root = Product([Categorical(0, 2), Categorical(1, 3)])
    assert Circuit(root, dtype="float64").logits.dtype == torch.float64
    assert Circuit(root, dtype=torch.float32).logits.dtype == torch.float32
    for bad in (torch.int64, "int64", "float65", 3):
        with raises("dtype", repr(bad)):
            Circuit(root, dtype=bad)


def test_sample_rejects_a_bad_shape_or_generator():
    d = selective(3, 2, width=2).distribution()
    for bad in ((-1,), (2, -3), (1.5,), "x", (True,)):
        with raises("sample_shape", repr(bad)):
            d.sample(bad)
    for bad in ("x", 0):
        with raises("generator", repr(bad)):
            d.sample((2,), generator=bad)
    assert d.sample(3).shape == (3, 3)
