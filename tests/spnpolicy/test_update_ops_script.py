"""benchmarks/update_ops.py: the operation counter on known operations, and a run at 16
agents that writes its record."""

import json

import pytest
import torch

from tests.run_helpers import load_script


def test_the_counter_counts_each_dispatched_operation_once():
    script = load_script("benchmarks/update_ops.py")
    x = torch.ones(3, requires_grad=True)
    with script.CountOps() as counted:
        y = (x * 2).sum()
    assert counted.by_op == {"aten.mul": 1, "aten.sum": 1}
    assert sum(counted.by_site.values()) == 2
    with script.CountOps() as counted:
        y.backward()
    assert counted.by_op["aten.mul"] >= 1 and x.grad.tolist() == [2.0, 2.0, 2.0]


def test_a_run_at_16_agents_writes_its_record(tmp_path, capsys):
    out = tmp_path / "ops.json"
    result = load_script("benchmarks/update_ops.py").main(
        ["--agents", "16", "--batch-size", "8", "--out", str(out)])
    assert json.loads(out.read_text()) == result
    row, = result["rows"]
    assert row["num_agents"] == 16 and row["suite"] == "coverage-16"
    assert row["ops"] >= sum(row["by_op"].values()) > 0
    assert any(site.startswith("circuits/") for site in row["by_site"])
    assert "16 agents:" in capsys.readouterr().out


def test_a_team_size_without_a_suite_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        load_script("benchmarks/update_ops.py").main(["--agents", "12", "--out",
                                                      str(tmp_path / "x.json")])
    assert "--agents 12: unknown suite 'coverage-12'" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
