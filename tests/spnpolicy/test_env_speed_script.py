"""benchmarks/env_speed.py end to end on a tiny setting: the record's fields."""

import json

from tests.run_helpers import load_script


def test_env_speed_records_the_step_rate_and_the_potential(tmp_path):
    out = tmp_path / "env_speed.json"
    result = load_script("benchmarks/env_speed.py").main(
        ["--num-envs", "2", "--num-agents", "8", "--grid-size", "6", "--steps", "5",
         "--repeats", "2", "--warmup", "2", "--out", str(out)])
    assert json.loads(out.read_text()) == result
    assert len(result["repeats_agent_steps_per_s"]) == 2
    assert result["agent_steps_per_s"] > 0 and result["potential_us_per_call"] > 0
    assert 0 < result["potential_share_of_step"]
    assert result["config"]["num_agents"] == 8
