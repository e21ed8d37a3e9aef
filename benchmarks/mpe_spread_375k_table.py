"""The 10-seed table of mpe-spread at 375k env steps, from the two tracked result folders.

Seeds 0-2 and 7-9 are kept only as ``results/mpe-spread-375k/table.md`` (no run
directories): finals per seed rounded to 0.1 and 6-seed means at 100k, 200k and 300k.
Seeds 3-6: ``results/mpe-spread-375k-s3-6/summary.json`` holds each seed's final return
and evaluation curve. The table takes the
finals per seed (the six rounded ones as they are), their mean with a 95% bootstrap CI
(:func:`spnpolicy.bench.stats.mean_ci`), and the intermediate columns as the seed-weighted
mean of the two parts.

    .venv/bin/python benchmarks/mpe_spread_375k_table.py > benchmarks/results/mpe-spread-375k-10-seeds.md
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from spnpolicy.bench.stats import mean_ci

RESULTS = Path(__file__).resolve().parent / "results"
ALGOS = ("maddpg", "spn-ac", "vdn", "masac")
OLD_SEEDS = (0, 1, 2, 7, 8, 9)
STEPS = (100_000, 200_000, 300_000)
ROW = re.compile(r"\| (\S+) \| \S+ \[.*?\] \| (\S+) \| (\S+) \| (\S+) \| (.*) \|")


def old_part() -> dict[str, dict]:
    """Per algorithm: ``means`` at STEPS over the 6 seeds, ``finals`` per seed."""
    part = {}
    for line in (RESULTS / "mpe-spread-375k" / "table.md").read_text().splitlines():
        match = ROW.match(line)
        if match and match.group(1) in ALGOS:
            finals = [float(v) for v in match.group(5).split()]
            part[match.group(1)] = {"means": [float(match.group(k)) for k in (2, 3, 4)],
                                    "finals": dict(zip(OLD_SEEDS, finals, strict=True))}
    return part


def main() -> None:
    old = old_part()
    summary = json.loads((RESULTS / "mpe-spread-375k-s3-6" / "summary.json").read_text())
    cells = summary["results"]["simple_spread-N3"]
    print("| 375k steps, 10 seeds | final, mean [95% CI] | 100k | 200k | 300k | "
          "final per seed (0-9) |")
    print("|---|---|---:|---:|---:|---|")
    for algo in ALGOS:
        cell, finals = cells[algo], dict(old[algo]["finals"])
        finals.update(zip(cell["seeds"], cell["returns"], strict=True))
        seeds = sorted(finals)
        assert seeds == list(range(10)), f"{algo}: seeds {seeds}"
        estimate = mean_ci([finals[s] for s in seeds])
        columns = []
        for j, step in enumerate(STEPS):
            at_step = [dict(curve)[step] for curve in cell["curves"]]
            columns.append((len(OLD_SEEDS) * old[algo]["means"][j] + sum(at_step))
                           / (len(OLD_SEEDS) + len(at_step)))
        print(f"| {algo} | {estimate.format(1)} | " + " | ".join(f"{c:.1f}" for c in columns)
              + " | " + " ".join(f"{finals[s]:.1f}" for s in seeds) + " |")


if __name__ == "__main__":
    main()
