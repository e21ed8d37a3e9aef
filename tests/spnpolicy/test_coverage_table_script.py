"""benchmarks/coverage_table.py: success thresholds per algorithm, and the coverage env's final
potential where the evaluations report it."""

from spnpolicy.bench.records import RunRecord
from spnpolicy.bench.stats import mean_ci
from tests.run_helpers import load_script


def _run(algo: str, seed: int, successes, potentials=None, sampled=None) -> RunRecord:
    history = []
    for i, success in enumerate(successes):
        h = {"step": 1000 * (i + 1), "success_rate": success}
        if potentials is not None:
            h["final_potential"] = potentials[i]
        if sampled is not None:
            h["stochastic_success_rate"] = sampled[i]
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


def test_sampled_success_where_the_algorithm_reported_it():
    """spn-ac's evaluations also play its sampling policy; the Q-learners' do not."""
    script = load_script("benchmarks/coverage_table.py")
    runs = [_run("spn-ac", 0, [0.0, 0.1], sampled=[0.2, 0.9]),
            _run("spn-ac", 1, [0.0, 0.7], sampled=[0.0, 1.0]),
            _run("vdn", 0, [0.5, 0.9]), _run("vdn", 1, [0.5, 1.0])]
    spn, vdn = script.table(runs, 0.9)["rows"]
    assert spn["final_sampled_success"] == mean_ci([0.9, 1.0]).to_json()
    assert vdn["final_sampled_success"] is None
    text = script.markdown(script.table(runs, 0.9))
    assert "| final sampled success |" in text and text.count("|---") == 7
    assert "| cov | vdn | 2 | 0.95 [" in text and text.rstrip().endswith("| n/a |")
    assert "| 0.95 [0.90, 1.00] |" in text
    assert "sampled" not in script.markdown(script.table(runs[2:], 0.9))
