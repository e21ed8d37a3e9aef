"""benchmarks/lift_diagnosis.py on a tiny budget: it observes the algorithm the registry
builds (its updates counted, its critics and policy probed) and restores the class."""

import json

import pytest

from spnpolicy.algos import spn_ac
from tests.run_helpers import load_script


@pytest.mark.parametrize("algo", ["spn-ac", "meanfield-ac"])
def test_the_script_probes_the_trained_algorithm(tmp_path, algo):
    bench = load_script("benchmarks/lift_diagnosis.py")
    init, update = spn_ac.SpnAc.__init__, spn_ac.SpnAc.update
    bench.main(["--algo", algo, "--agents", "3", "--total-steps", "96", "--set",
                "learning_starts=32", "--set", "batch_size=16", "--set", "width=4",
                "--out", str(tmp_path)])
    assert (spn_ac.SpnAc.__init__, spn_ac.SpnAc.update) == (init, update)
    (line,) = (tmp_path / "lift_diagnosis.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert record["algo"] == algo and record["agents"] == 3
    assert record["updates"] >= (96 - 32) // 8       # the updates after learning_starts
    for state in record["states"].values():
        assert 0.0 <= state["pi_all_lift"] <= 1.0
        assert state["Q_best"] >= max(state["Q_all_lift"], state["Q_all_wait"])
        assert len(state["mode"]) == 3
