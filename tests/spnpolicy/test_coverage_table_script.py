"""benchmarks/coverage_table.py: success thresholds per algorithm, and the coverage env's final
potential where the evaluations report it."""

from spnpolicy.bench.records import RunRecord
from spnpolicy.bench.stats import mean_ci
from tests.run_helpers import load_script


def _run(algo: str, seed: int, successes, potentials=None) -> RunRecord:
    history = []
    for i, success in enumerate(successes):
        h = {"step": 1000 * (i + 1), "success_rate": success}
        if potentials is not None:
            h["final_potential"] = potentials[i]
        history.append(h)
    return RunRecord(task="cov", algo=algo, env="coverage", seed=seed,
                     total_steps=1000 * len(successes), history=tuple(history))


def test_thresholds_and_potentials():
    script = load_script("benchmarks/coverage_table.py")
    runs = [_run("a", 0, [0.2, 0.95, 1.0], [-2.0, -0.5, 0.0]),
            _run("a", 1, [0.0, 0.1, 0.3], [-3.0, -1.0, -1.5]),
            _run("b", 0, [0.0, 0.0], [-2.5, -2.0]),
            _run("b", 1, [0.0, 0.0], [-1.0, -4.0])]
    summary = script.table(runs, 0.9)
    a, b = summary["rows"]
    assert (a["algo"], a["final_at_least"], a["reached"]) == ("a", 1, 1)
    assert a["steps_to_threshold"]["value"] == 2000
    assert a["final_success"] == mean_ci([1.0, 0.3]).to_json()
    assert a["final_potential"] == mean_ci([0.0, -1.5]).to_json()
    assert a["best_potential"] == mean_ci([0.0, -1.0]).to_json()
    assert b["steps_to_threshold"] is None and b["best_potential"] == mean_ci([-2.0, -1.0]).to_json()
    text = script.markdown(summary)
    assert "| final potential | best potential |" in text
    assert "| cov | b | 2 | 0.00" in text and "not reached (0/2)" in text


def test_no_potential_columns_without_the_metric():
    script = load_script("benchmarks/coverage_table.py")
    summary = script.table([_run("a", 0, [0.5, 1.0]), _run("a", 1, [1.0, 1.0])], 0.9)
    assert "final_potential" not in summary["rows"][0]
    assert "potential" not in script.markdown(summary)
