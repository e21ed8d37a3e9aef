"""benchmarks/many_agents_signal.py: the share of coverage's progress reward that one agent's
action explains."""

import json
import math

from tests.run_helpers import load_script


def script():
    return load_script("benchmarks/many_agents_signal.py")


def test_one_agent_explains_the_whole_reward():
    # with one agent the reward is its own term exactly: no residual, no rest of the team
    row = script().measure(1, 4, num_envs=8, steps=20, seed=0)
    assert row["additive_r2"] == 1.0 and row["rest_std"] == 0.0
    assert math.isinf(row["gap_to_noise"])
    # on a 4x4 grid an agent's best and worst moves differ by 2 cells of 4: 0.25 or 0.5
    assert 0.0 < row["agent_gap"] <= 0.5


def test_a_team_shares_the_reward_and_the_script_writes_its_rows(tmp_path):
    out = tmp_path / "signal.json"
    script().main(["--teams", "3:6", "--envs", "4", "--steps", "8", "--out", str(out)])
    (row,) = json.loads(out.read_text())
    assert row["num_agents"] == 3 and row["transitions"] == 32
    assert 0.0 < row["additive_r2"] <= 1.0 and row["rest_std"] > 0.0
    assert row["gap_to_noise"] == row["agent_gap"] / row["rest_std"]
