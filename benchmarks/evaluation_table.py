"""One table from ``spnpolicy evaluate`` records: greedy return per algorithm, per seed.

```bash
.venv/bin/python benchmarks/evaluation_table.py benchmarks/results/predator-prey/evaluate \\
    --out benchmarks/results/predator-prey/evaluate/table
```

Reads every ``*.json`` record of ``spnpolicy evaluate RUN --out FILE`` in the given files or
folders, and groups them by algorithm, and for spn-ac and its variants by the ``acting``
played (``spn-ac (critics)``). A row: each seed's greedy ``return_mean`` (the seed is the run
directory's name, ``s<seed>``, as ``spnpolicy bench`` lays runs out), their mean with a 95%
bootstrap CI over seeds, and the episodes each record played. Records of one row must share
the env, its arguments, the episodes and the episode seed; ValueError otherwise. Writes
``<out>.json``, ``<out>.md`` and a plot ``<out>.png`` (each seed's return and each row's mean
with its CI) with ``--out``, and prints the markdown.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from spnpolicy.bench.stats import mean_ci

SAME = ("env", "env_kwargs", "episodes", "seed")
"""What every record of a row must share: the same episodes of the same task."""


def read_records(paths: list[Path], skip: Path | None = None) -> list[dict]:
    """The evaluate records in ``paths`` (files, or folders of ``*.json`` files), but
    ``skip`` (this script's own table, written beside the records)."""
    for path in paths:
        if not path.exists():
            raise ValueError(f"{path}: no such file or folder")
    files = [f for p in paths for f in (sorted(p.glob("*.json")) if p.is_dir() else [p])
             if skip is None or f.resolve() != skip.resolve()]
    if not files:
        raise ValueError(f"no evaluate records (*.json) in {', '.join(map(str, paths))}")
    records = []
    for path in files:
        record = json.loads(path.read_text())
        if "greedy" not in record or "algo" not in record:
            raise ValueError(f"{path}: not a 'spnpolicy evaluate' record (no algo or greedy)")
        records.append(record)
    return records


def run_seed(record: dict) -> int:
    """The seed of the record's run: its directory's name ``s<seed>``."""
    name = Path(record["run"]).name
    if name == "last.pt":
        name = Path(record["run"]).parent.parent.name
    match = re.fullmatch(r"s(\d+)", name)
    if match is None:
        raise ValueError(f"run {record['run']!r}: its directory is not named s<seed>")
    return int(match.group(1))


def table(records: list[dict]) -> dict[str, dict]:
    """Row name -> ``{"seeds": {seed: return}, "mean", "low", "high", "episodes"}``."""
    rows: dict[str, list[dict]] = {}
    for record in records:
        name = record["algo"] + (f" ({record['acting']})" if "acting" in record else "")
        rows.setdefault(name, []).append(record)
    out = {}
    for name, group in sorted(rows.items()):
        for key in SAME:
            values = {json.dumps(r[key], sort_keys=True) for r in group}
            if len(values) > 1:
                raise ValueError(f"{name}: its records differ in {key}: {sorted(values)}")
        seeds = {run_seed(r): r["greedy"]["return_mean"] for r in group}
        if len(seeds) < len(group):
            raise ValueError(f"{name}: two records of one seed")
        estimate = mean_ci(list(seeds.values()))
        out[name] = {"seeds": dict(sorted(seeds.items())), "mean": estimate.value,
                     "low": estimate.low, "high": estimate.high,
                     "episodes": group[0]["episodes"]}
    return out


def markdown(rows: dict[str, dict]) -> str:
    lines = ["| algorithm | greedy return, mean [95% CI] | seeds | per seed |",
             "|---|---|---:|---|"]
    for name, row in rows.items():
        per_seed = " ".join(f"s{s}: {v:.1f}" for s, v in row["seeds"].items())
        lines.append(f"| {name} | {row['mean']:.1f} [{row['low']:.1f}, {row['high']:.1f}] | "
                     f"{len(row['seeds'])} | {per_seed} |")
    return "\n".join(lines) + "\n"


def plot(rows: dict[str, dict], path: Path, title: str) -> None:
    """Each row's per-seed returns (dots) and its mean with the 95% CI (bar), to ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.2))
    for y, name in enumerate(names):
        row = rows[name]
        values = list(row["seeds"].values())
        ax.scatter(values, [y] * len(values), s=14, color="0.55", zorder=2)
        ax.errorbar(row["mean"], y, xerr=[[row["mean"] - row["low"]], [row["high"] - row["mean"]]],
                    fmt="o", color="C0", capsize=4, zorder=3)
    ax.set_yticks(range(len(names)), [f"{n} ({len(rows[n]['seeds'])})" for n in names])
    ax.invert_yaxis()
    ax.axvline(0, color="0.8", lw=1, zorder=1)
    ax.set_xlabel("greedy return per seed (dots); mean and 95% CI (blue)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+", type=Path,
                        help="evaluate records (JSON), or folders of them")
    parser.add_argument("--out", type=Path, default=None,
                        help="write OUT.json, OUT.md and the plot OUT.png")
    parser.add_argument("--title", default="greedy return of each run, spnpolicy evaluate",
                        help="the plot's title")
    args = parser.parse_args(argv)
    rows = table(read_records(args.paths,
                              None if args.out is None else args.out.with_suffix(".json")))
    text = markdown(rows)
    print(text, end="")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(text)
        plot(rows, args.out.with_suffix(".png"), args.title)


if __name__ == "__main__":
    main()
