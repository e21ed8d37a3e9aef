"""benchmarks/train_speed.py: one tiny run of both algorithms writes its figures."""

import json

import pytest

from tests.run_helpers import load_script


def test_writes_rates_and_update_times(tmp_path):
    out = tmp_path / "speed.json"
    result = load_script("benchmarks/train_speed.py").main(
        ["--settings", "3x6x6", "--steps", "200", "--num-envs", "4", "--batch-size", "16",
         "--learning-starts", "32", "--updates", "2", "--repeats", "1",
         "--spn-ac-hidden", "8,8", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["spn_ac_hidden"] == [8, 8]
    row, = result["settings"]
    for algo in ("spn-ac", "vdn"):
        assert row[algo]["env_steps_per_s"] > 0 and row[algo]["update_ms"] > 0
    assert row["ratio_env_steps_per_s"] == pytest.approx(
        row["spn-ac"]["env_steps_per_s"] / row["vdn"]["env_steps_per_s"])


def test_bad_widths_are_refused():
    with pytest.raises(SystemExit):
        load_script("benchmarks/train_speed.py").main(["--spn-ac-hidden", "64,x"])


def test_a_missing_accelerator_is_an_error(monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as stop:
        load_script("benchmarks/train_speed.py").main(["--device", "cuda"])
    assert stop.value.code == 2
