"""The inference examples, run as scripts the way a newcomer runs them."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def run_example(name: str) -> str:
    out = subprocess.run([sys.executable, str(ROOT / "examples" / name)], capture_output=True,
                         text=True, cwd=ROOT, env=ENV, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_build_and_query_runs_every_query():
    stdout = run_example("build_and_query.py")
    for query in ("log p(x)", "single-variable marginals", "joint marginal of agents",
                  "marginals given agent 1 = 2", "samples given agent 1 = 2",
                  "most probable joint action", "entropy (exact", "log p(x_i | x_-i)",
                  "mixture entropy -> NotDeterministicError"):
        assert query in stdout


def _fraction(stdout: str, label: str) -> float:
    match = re.search(re.escape(label) + r"\s*([0-9.]+)", stdout)
    assert match, stdout
    return float(match.group(1))


def test_broken_agent_example_compares_both_ways_of_acting():
    stdout = run_example("broken_agent.py")
    for label in ("(a) joint policy, env overrides agent 2:",
                  "(b) others conditioned on u_2 = noop:"):
        assert 0.0 <= _fraction(stdout, label) <= 1.0
    conditioned = re.search(r"pi\(u_i \| s, u_2 = noop\) \[n, k\]:\n(.*?)\n(?:[a-z]|$)", stdout,
                            flags=re.DOTALL).group(1)
    assert "[1.0000, 0.0000, 0.0000, 0.0000, 0.0000, 0.0000]" in conditioned
    assert re.search(r"given u_2 = noop: \[\d, \d, 0\]", stdout)


def test_anomaly_scores_example_reports_auroc_and_accuracy():
    stdout = run_example("anomaly_scores.py")
    assert len(re.findall(r"^  step +\d+:", stdout, flags=re.MULTILINE)) == 15
    for method in ("leave-one-out", "marginal baseline"):
        match = re.search(re.escape(method) + r"\s+AUROC ([0-9.]+), rogue agent named on "
                          r"([0-9.]+)%", stdout)
        assert match, stdout
        assert 0.0 <= float(match.group(1)) <= 1.0 and 0.0 <= float(match.group(2)) <= 100.0
