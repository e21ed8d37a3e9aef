"""benchmarks/elbo_scaling.py: its figures file, and the interleaved t(64)/t(8) section."""

import json

import pytest
import torch

from tests.run_helpers import load_script


def test_writes_the_sizes_and_the_interleaved_ratios(tmp_path):
    out = tmp_path / "elbo.json"
    result = load_script("benchmarks/elbo_scaling.py").main(
        ["--sizes", "4", "8", "--repeats", "1", "--batch", "2", "--interleaved", "1",
         "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert [row["n"] for row in result["results"]] == [4, 8]
    assert result["results"][0]["enumeration"] is not None      # 2 * 6^4 entries fit
    assert result["ratio_64_over_8"] is None                     # n = 64 not among the sizes
    pairs = {(row["graph"], row["evaluator"]) for row in result["interleaved"]}
    assert pairs == {(g, e) for g in ("random", "line") for e in ("engine", "region tree")}
    for row in result["interleaved"]:
        assert row["ratio_64_over_8"] == row["cpu_ms_64"] / row["cpu_ms_8"] > 0
    assert out.with_suffix(".png").stat().st_size > 0


def test_a_missing_accelerator_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as stop:
        load_script("benchmarks/elbo_scaling.py").main(
            ["--sizes", "4", "--device", "cuda", "--out", str(tmp_path / "x.json")])
    assert stop.value.code == 2
