"""benchmarks/engine.py: the reference section's row, with the normalisation timed alone."""

import math
import sys

import pytest
import torch

from tests.run_helpers import ROOT, load_script

sys.path.insert(0, str(ROOT / "benchmarks"))   # the script's own imports (timing, references)
engine = load_script("benchmarks/engine.py")

TINY = dict(num_vars=8, num_states=3, depth=2, num_repetitions=2, num_sums=3,
            num_input_distributions=3, seed=0)


def test_reference_row_splits_forward_backward_into_normalisation_and_the_rest():
    row = engine.bench_reference(TINY, batches=(1, 5), device="cpu", budget_s=0.01)
    assert sorted(row["batches"]) == [1, 5]
    for r in row["batches"].values():
        assert r["ours_normalise_ms"] > 0
        assert math.isclose(r["ours_normalise_over_forward"],
                            r["ours_normalise_ms"] / r["ours_forward_ms"])
        assert math.isclose(r["ours_backward_less_normalise_over_forward"],
                            (r["ours_forward_backward_ms"] - r["ours_normalise_ms"])
                            / r["ours_forward_ms"])


def test_selective_rows_record_their_device(monkeypatch):
    monkeypatch.setattr(engine, "SELECTIVE_SIZES", (8,))
    rows = engine.bench_selective(repeats=1, device="cpu")
    assert [(row["num_vars"], row["device"]) for row in rows] == [(8, "cpu")]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_cuda_without_cuda_is_refused_naming_the_option(capsys):
    with pytest.raises(SystemExit):
        engine.main(["--device", "cuda", "--sections", "selective"])
    assert "--device cuda" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_selective_section_runs_on_cuda(monkeypatch):
    monkeypatch.setattr(engine, "SELECTIVE_SIZES", (8,))
    assert engine.bench_selective(repeats=1, device="cuda")[0]["device"].startswith("cuda")
