"""Sampling: seeded chi-square tests against the exact (enumerated) distribution."""

import math

import numpy as np
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy import stats

from circuits import Categorical, Circuit, Product, Sum
from circuits.structures import mixture, selective
from tests.circuits import oracle
from tests.circuits.helpers import build, engine_joint, joint
from tests.circuits.strategies import evidences, random_circuits

NUM_SAMPLES = 20_000
P_MIN = 1e-4
"""Rejection threshold; with fixed seeds and about 30 checks a false alarm is unlikely."""

SEEDED = settings(max_examples=10, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def chi_square_pvalue(samples: torch.Tensor, table: np.ndarray) -> float:
    """Pearson chi-square of ``samples [N, n]`` against the joint ``table``; bins with an
    expected count under 5 are pooled. Fails outright if a sample has probability zero."""
    table = table / table.sum()
    flat = np.ravel_multi_index(samples.numpy().T, table.shape)
    counts = np.bincount(flat, minlength=table.size).astype(np.float64)
    expected = len(flat) * table.reshape(-1)
    impossible = counts[expected == 0].sum()
    assert impossible == 0, f"{impossible:.0f} samples fell on zero-probability assignments"
    big = expected >= 5
    observed, wanted = list(counts[big]), list(expected[big])
    if expected[~big].sum() > 0:
        observed.append(counts[~big].sum())
        wanted.append(expected[~big].sum())
    if len(observed) < 2:
        return 1.0
    return stats.chisquare(observed, wanted).pvalue


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_chi_square_helper_rejects_the_wrong_distribution():
    skewed = Circuit(Product([Categorical(0, 3, probs=[.5, .3, .2]),
                              Categorical(1, 2, probs=[.4, .6])])).double()
    x = skewed.sample(NUM_SAMPLES, generator=seeded())
    assert chi_square_pvalue(x, np.full((3, 2), 1 / 6)) < 1e-10
    assert chi_square_pvalue(x, np.outer([.5, .3, .2], [.4, .6])) > P_MIN


@SEEDED
@given(random_circuits())
def test_samples_follow_the_joint(rc):
    c = build(rc)
    x = c.sample(NUM_SAMPLES, generator=seeded())
    assert x.shape == (NUM_SAMPLES, len(rc.num_states)) and x.dtype == torch.long
    assert chi_square_pvalue(x, joint(rc)) > P_MIN


@SEEDED
@given(random_circuits(), st.data())
def test_conditional_samples_follow_the_conditional(rc, data):
    p = joint(rc)
    evidence = data.draw(evidences(rc.num_states, min_observed=1))
    assume(oracle.prob(p, evidence) > 0)
    x = build(rc).sample(NUM_SAMPLES, evidence=torch.tensor(evidence), generator=seeded())
    observed = [v for v, e in enumerate(evidence) if e >= 0]
    assert torch.equal(x[:, observed], torch.tensor(evidence)[observed].expand(NUM_SAMPLES, -1))
    assert chi_square_pvalue(x, oracle.condition(p, evidence)) > P_MIN


@SEEDED
@given(random_circuits(min_vars=2), st.data())
def test_sampling_a_conditioned_distribution(rc, data):
    p = joint(rc)
    evidence = data.draw(evidences(rc.num_states, min_observed=1))
    assume(oracle.prob(p, evidence) > 0)
    torch.manual_seed(1)
    x = build(rc).condition(torch.tensor(evidence)).sample((NUM_SAMPLES,))
    assert chi_square_pvalue(x, oracle.condition(p, evidence)) > P_MIN


def test_batched_samples_follow_each_row():
    c = mixture(3, 3, 3).double()
    params = 1.5 * torch.randn(2, c.num_params, generator=seeded(3), dtype=torch.float64)
    d = c.distribution(params)
    tables = engine_joint(d, c.num_states)
    assert not np.allclose(tables[0], tables[1])
    torch.manual_seed(2)
    x = d.sample((NUM_SAMPLES,))
    assert x.shape == (NUM_SAMPLES, 2, 3)
    for row in range(2):
        assert chi_square_pvalue(x[:, row], tables[row]) > P_MIN
    # The rows really differ, so the check above would notice swapped rows.
    assert chi_square_pvalue(x[:, 0], tables[1]) < 1e-10


def test_generator_makes_sampling_reproducible():
    c = selective(6, 3, width=6)
    first = c.sample(200, generator=seeded(5))
    assert torch.equal(first, c.sample(200, generator=seeded(5)))
    assert not torch.equal(first, c.sample(200, generator=seeded(6)))
    evidence = torch.tensor([-1, 2, -1, -1, 0, -1])
    again = c.sample(200, evidence=evidence, generator=seeded(5))
    assert torch.equal(again, c.sample(200, evidence=evidence, generator=seeded(5)))


def test_sampling_through_shared_sub_circuits():
    shared = Sum([Product([Categorical(1, 2, probs=[.9, .1]), Categorical(2, 2, probs=[.2, .8])]),
                  Product([Categorical(1, 2, probs=[.3, .7]), Categorical(2, 2, probs=[.6, .4])])],
                 weights=[.25, .75])
    root = Sum([Product([Categorical.indicator(0, 0, 3), shared]),
                Product([Categorical(0, 3, support=[1, 2]), shared]),
                Product([Categorical(0, 3, probs=[.1, .1, .8]),
                         Categorical(1, 2), Categorical(2, 2)])], weights=[.5, .3, .2])
    c = Circuit(root).double()
    x = c.sample(NUM_SAMPLES, generator=seeded(7))
    assert chi_square_pvalue(x, oracle.joint_table(root)) > P_MIN


def test_samples_in_small_chunks_follow_each_row(monkeypatch):
    """Chunks of a few rows (not a multiple of the batch) still pair each row with its params."""
    from circuits import downward
    c = mixture(3, 3, 3).double()
    params = 1.5 * torch.randn(3, c.num_params, generator=seeded(4), dtype=torch.float64)
    params[:, :2] = torch.tensor([0.0, -math.inf], dtype=torch.float64)   # a zero-mass state
    d = c.distribution(params)
    monkeypatch.setattr(downward, "CHUNK_ELEMENTS", 7 * (c._plan_on("cpu").num_nodes + 40))
    x = d.sample((NUM_SAMPLES // 2,), generator=seeded(8))
    tables = engine_joint(d, c.num_states)
    for row in range(3):
        assert chi_square_pvalue(x[:, row], tables[row]) > P_MIN
