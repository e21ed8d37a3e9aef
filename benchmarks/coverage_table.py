"""Coverage tables: final greedy success and env steps to a success level, per algorithm.

```bash
.venv/bin/python benchmarks/coverage_table.py runs/bench/coverage-quick \\
    --threshold 0.9 --out benchmarks/results/coverage-quick/threshold
```

For every (task, algorithm) over the finished runs under the given directories: the final
greedy success rate (mean and 95% bootstrap CI over seeds), the seeds whose final success
is at least the threshold, and the env steps of the first evaluation reaching the threshold
(mean and 95% CI over the seeds that reached it; seeds that never did are counted apart,
not averaged in). Where every run's evaluations report ``final_potential`` (the coverage env's
assignment potential at the episodes' ends, 0 = every goal held), also its final value and
its best over the evaluations (mean and 95% CI over seeds): the progress a success rate of
0 does not show. Where an algorithm's final evaluations also played its sampling policy
(``stochastic_success_rate``, e.g. spn-ac's draws from its joint policy beside its mode),
also that policy's final success ("n/a" for the algorithms that did not report it). Writes
``<out>.json`` and ``<out>.md`` and prints the markdown.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from spnpolicy.bench.records import find_run_dirs, load_run, ordered
from spnpolicy.bench.stats import mean_ci


def steps_to(history, level: float, metric: str = "success_rate") -> int | None:
    """Env steps of the first evaluation with ``metric >= level`` (None: never)."""
    return next((int(h["step"]) for h in history if h[metric] >= level), None)


def table(records, level: float) -> dict:
    finished = [r for r in records if r.finished]
    tasks, algos = ordered(finished)
    out = {"threshold": level, "rows": []}
    for task in tasks:
        for algo in algos:
            runs = sorted((r for r in finished if r.task == task and r.algo == algo),
                          key=lambda r: r.seed)
            if not runs:
                continue
            final = [r.final["success_rate"] for r in runs]
            reached = [s for s in (steps_to(r.history, level) for r in runs) if s is not None]
            row = {"task": task, "algo": algo, "seeds": [r.seed for r in runs],
                   "total_steps": sorted({r.total_steps for r in runs}),
                   "final_success": mean_ci(final).to_json(),
                   "final_at_least": sum(f >= level for f in final),
                   "steps_to_threshold": mean_ci(reached).to_json() if reached else None,
                   "reached": len(reached)}
            sampled = [r.final.get("stochastic_success_rate") for r in runs]
            row["final_sampled_success"] = (None if None in sampled
                                            else mean_ci(sampled).to_json())
            if all("final_potential" in h for r in runs for h in r.history):
                row["final_potential"] = mean_ci(
                    [r.final["final_potential"] for r in runs]).to_json()
                row["best_potential"] = mean_ci(
                    [max(h["final_potential"] for h in r.history) for r in runs]).to_json()
            out["rows"].append(row)
    return out


def markdown(summary: dict) -> str:
    level = summary["threshold"]
    potential = all("final_potential" in row for row in summary["rows"])
    sampled = any(row.get("final_sampled_success") for row in summary["rows"])
    extra = (" final sampled success |" if sampled else "") + (
        " final potential | best potential |" if potential else "")
    lines = [f"| task | algo | seeds | final greedy success | final >= {level:g} | "
             f"env steps to {level:g} (seeds reaching it) |" + extra,
             "|---" * (6 + sampled + 2 * potential) + "|"]

    def fmt(entry, digits):
        if entry is None:
            return "not reached"
        low, high = entry["ci95"]
        if low is None:
            return f"{entry['value']:,.{digits}f}"
        return f"{entry['value']:,.{digits}f} [{low:,.{digits}f}, {high:,.{digits}f}]"

    for row in summary["rows"]:
        n = len(row["seeds"])
        steps = fmt(row["steps_to_threshold"], 0)
        line = (f"| {row['task']} | {row['algo']} | {n} | {fmt(row['final_success'], 2)} "
                f"| {row['final_at_least']}/{n} | {steps} ({row['reached']}/{n}) |")
        if sampled:
            entry = row.get("final_sampled_success")
            line += f" {fmt(entry, 2) if entry else 'n/a'} |"
        if potential:
            line += f" {fmt(row['final_potential'], 2)} | {fmt(row['best_potential'], 2)} |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    records = [load_run(d) for d in find_run_dirs(args.paths)]
    summary = table(records, args.threshold)
    text = markdown(summary)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
