"""``--algos`` may add registered algorithms that a suite does not list (the project benches its
off-policy baselines on the matrix suite this way)."""

import pytest

from spnpolicy.bench.runner import plan
from spnpolicy.bench.suites import get_suite


def test_algos_may_name_a_registered_algorithm_outside_the_suite(tmp_path):
    suite = get_suite("matrix")
    assert "masac" not in suite.algos
    runs = plan(suite, tmp_path, algos=["masac", "spn-ac"], tasks=["coordination"], seeds=2)
    assert [(r.algo, r.seed) for r in runs] == [("masac", 0), ("spn-ac", 0), ("masac", 1),
                                                ("spn-ac", 1)]
    assert {r.algo for r in plan(suite, tmp_path, seeds=1)} == set(suite.algos)


def test_unregistered_names_are_still_refused(tmp_path):
    with pytest.raises(ValueError, match=r"unknown algorithm\(s\) \['masacc'\]"):
        plan(get_suite("matrix"), tmp_path, algos=["masacc"])
