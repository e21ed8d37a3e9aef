"""benchmarks/mpe_spread_375k_table.py: the tracked 10-seed table is what the script makes of
the two tracked result folders."""

from pathlib import Path

from spnpolicy.bench.stats import mean_ci
from tests.run_helpers import load_script

ROOT = Path(__file__).resolve().parents[2]


def test_the_tracked_table_is_reproduced(capsys):
    load_script("benchmarks/mpe_spread_375k_table.py").main()
    printed = capsys.readouterr().out
    assert printed == (ROOT / "benchmarks/results/mpe-spread-375k-10-seeds.md").read_text()


def test_each_row_is_the_mean_of_its_ten_seeds():
    script = load_script("benchmarks/mpe_spread_375k_table.py")
    lines = (ROOT / "benchmarks/results/mpe-spread-375k-10-seeds.md").read_text().splitlines()
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        finals = [float(v) for v in cells[-1].split()]
        assert cells[0] in script.ALGOS and len(finals) == 10
        assert cells[1] == mean_ci(finals).format(1)   # the rounded finals give the same
