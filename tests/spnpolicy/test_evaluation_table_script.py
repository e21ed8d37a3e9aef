"""benchmarks/evaluation_table.py: one table from the records of ``spnpolicy evaluate`` on
runs trained here."""

import json
import shutil

import pytest

from spnpolicy.bench.stats import mean_ci
from spnpolicy.evaluate import evaluate_saved_run
from tests.run_helpers import load_script, train_tiny


def script():
    return load_script("benchmarks/evaluation_table.py")


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """Records of seeds s0 and s1 (one tiny run copied: the same agent twice), each played
    by its policy and by its critics, 3 episodes each."""
    root = tmp_path_factory.mktemp("table")
    train_tiny(root / "s0")
    shutil.copytree(root / "s0", root / "s1")
    folder = root / "records"
    folder.mkdir()
    for seed in (0, 1):
        for acting in ("policy", "critics"):
            record = evaluate_saved_run(root / f"s{seed}", 3, acting=acting)
            (folder / f"s{seed}_{acting}.json").write_text(json.dumps(record))
    return folder


def test_rows_are_algorithm_and_acting_with_each_seeds_return(records, tmp_path):
    out = tmp_path / "table"
    script().main([str(records), "--out", str(out)])
    rows = json.loads(out.with_suffix(".json").read_text())
    assert set(rows) == {"spn-ac (critics)", "spn-ac (policy)"}
    for acting, row in rows.items():
        played = [json.loads((records / f"s{s}_{acting.split('(')[1][:-1]}.json").read_text())
                  for s in (0, 1)]
        assert row["seeds"] == {"0": played[0]["greedy"]["return_mean"],
                                "1": played[1]["greedy"]["return_mean"]}
        estimate = mean_ci([p["greedy"]["return_mean"] for p in played])
        assert (row["mean"], row["low"], row["high"]) == (estimate.value, estimate.low,
                                                          estimate.high)
        assert row["episodes"] == 3
    # written beside the records, the table is not read back as one
    script().main([str(records), "--out", str(records / "table")])
    assert json.loads((records / "table.json").read_text()) == rows
    text = out.with_suffix(".md").read_text()
    assert text.splitlines()[0].startswith("| algorithm | greedy return")
    assert "| spn-ac (policy) |" in text and "s0: " in text and "s1: " in text
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_records_of_other_episodes_or_no_records_are_refused(records, tmp_path):
    other = json.loads((records / "s1_policy.json").read_text()) | {"episodes": 7}
    (tmp_path / "s1_policy.json").write_text(json.dumps(other))
    shutil.copy(records / "s0_policy.json", tmp_path / "s0_policy.json")
    with pytest.raises(ValueError, match=r"^spn-ac \(policy\): its records differ in episodes"):
        script().main([str(tmp_path)])
    with pytest.raises(ValueError, match="empty: no such file or folder$"):
        script().main([str(tmp_path / "empty")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="^no evaluate records"):
        script().main([str(tmp_path / "empty")])
