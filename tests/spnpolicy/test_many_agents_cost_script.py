"""benchmarks/many_agents_cost.py end to end with --quick, in a subprocess: the record's
fields (its figures, on tiny settings, mean nothing)."""

import json
import subprocess
import sys

import pytest

from tests.run_helpers import ROOT


@pytest.mark.slow  # six subprocesses, each importing torch
def test_quick_run_writes_every_figure(tmp_path):
    out = tmp_path / "cost.json"
    proc = subprocess.run([sys.executable, "benchmarks/many_agents_cost.py", "--quick",
                           "--device", "cpu", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["benchmark"] == "many_agents_cost" and result["quick"] is True
    assert result["device"] == "cpu" and result["device_name"]
    assert result["commit"] and "--quick" in result["command"]
    assert result["num_envs"] == 2 and result["batch_size"] == 8
    small, large = result["teams"]
    assert (small["num_agents"], large["num_agents"]) == (16, 64)
    assert small["suite_config"]["num_factors"] == 32
    assert large["env_kwargs"]["grid_size"] == 32
    for team in (small, large):
        for algo in ("spn-ac", "vdn"):
            figures = team[algo]
            assert figures["env_steps_per_s"] > 0 and figures["update_rounds"] >= 2
            assert figures["peak_rss_mb"] >= figures["rss_after_import_mb"] > 0
            assert figures["before_timed_s"] > 0 and "timed_window" not in figures
        # the suites' spn-ac reads the agents' observations: its buffer holds them
        assert team["suite_config"]["critic_input"] == "agents"
        assert team["suite_algo_config"]["spn-ac"] == {"factor_graph": "nearest",
                                                       "neighbours": 2, "sibling_pairs": True}
        assert "obs" in team["spn-ac"]["buffer_fields"]
        assert "obs" in team["vdn"]["buffer_fields"]
        ratio = team["spn-ac"]["env_steps_per_s"] / team["vdn"]["env_steps_per_s"]
        assert abs(team["ratio_env_steps_per_s"] - ratio) < 1e-9
    assert "full_buffer" not in small["spn-ac"]
    for algo in ("spn-ac", "vdn"):
        full = large[algo]["full_buffer"]
        assert full["buffer_rows"] == full["buffer_capacity"] == 64
        assert full["fill_rows"] >= 64 and full["peak_rss_mb"] > 0
        growth = result["growth"][algo]
        assert growth["linear_growth"] == 4 and growth["cost_growth"] > 0
