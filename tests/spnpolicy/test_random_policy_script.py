"""benchmarks/random_policy.py: the uniformly random policy's reference row of a suite."""

import json

import numpy as np
import pytest

from tests.run_helpers import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("benchmarks/random_policy.py")


def test_random_policy_row_of_a_suites_task(script, tmp_path):
    out = tmp_path / "random.json"
    result = script.main(["matrix", "--tasks", "climbing,penalty-k100", "--episodes", "64",
                          "--out", str(out)])
    assert json.loads(out.read_text()) == result
    assert list(result) == ["climbing", "penalty-k100"]
    for row in result.values():
        low, high = row["return_ci95"]
        assert row["episodes"] == 64 and low < row["return_mean"] < high
        assert 0.0 <= row["success_rate"] <= 1.0
    # penalty with k = 100: a uniformly random joint action scores (22 - 2 * 100) / 9 on
    # average (the payoffs' mean); the CI holds it
    low, high = result["penalty-k100"]["return_ci95"]
    assert low < -178 / 9 < high


def test_unknown_task_is_named(script, tmp_path, capsys):
    with pytest.raises(SystemExit):
        script.main(["matrix", "--tasks", "climbing,nope", "--out", str(tmp_path / "x.json")])
    assert "--tasks: nope not in matrix" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        script.main(["no-such-suite"])
    assert exit_info.value.code == 2
    assert "unknown suite 'no-such-suite'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        script.main(["matrix", "matrix", "--out", str(tmp_path / "x.json")])
    assert exit_info.value.code == 2
    assert "tasks given twice: climbing" in capsys.readouterr().err


def test_random_policy_is_seeded(script):
    from spnpolicy.bench.suites import get_suite
    task = get_suite("matrix").tasks[0]
    a = script.random_policy(task.env, task.env_kwargs, 32)
    b = script.random_policy(task.env, task.env_kwargs, 32)
    assert a == b and np.isfinite(a["return_mean"])


def test_rows_of_several_suites_name_their_suite(script, tmp_path):
    result = script.main(["matrix", "coverage-quick-small", "--tasks",
                          "coverage-2x4x4-fixed,climbing", "--episodes", "32",
                          "--out", str(tmp_path / "random.json")])
    assert list(result) == ["climbing", "coverage-2x4x4-fixed"]
    assert [row["suite"] for row in result.values()] == ["matrix", "coverage-quick-small"]
    assert all(row["episodes"] == 32 and 0.0 <= row["success_rate"] <= 1.0
               for row in result.values())
