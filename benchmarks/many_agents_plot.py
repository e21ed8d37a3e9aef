"""Success and cost against the number of agents: the many-agent table and plot.

```bash
.venv/bin/python benchmarks/many_agents_plot.py benchmarks/results/many-agents/runs \\
    --cost benchmarks/results/many-agents/cost_agents_cpu.json \\
    --out benchmarks/results/many-agents/team_size
```

For every (team size, algorithm) over the coverage runs found under the paths given (run
directories, or folders holding them; a run started from another run's learner,
``init_from`` in its provenance, is its own row, ``ALGO (warm start)``, or ``ALGO (warm
start, fresh critics)`` where that start kept the critics' tensors fresh; so is a run whose
critics' factor graph is one of :data:`CRITIC_GRAPHS`, ``ALGO (nearest pairs)``, a run whose
policy has sibling pairs, ``ALGO (..., sibling pairs)``, and one whose critics' tables are
centred, ``ALGO (..., centred critics)``): the env steps
trained, and the greedy success and
final assignment potential (0 = every goal held) of the last evaluation, as the mean over
seeds with a 95% bootstrap CI where there are several. Runs need not have reached their
budget: the table states the steps each reached. ``--at N=STEPS`` compares the runs of
team size N at their last evaluation at or before STEPS (an equal budget where runs went on
for different lengths). With ``--cost`` (a file written by
``many_agents_cost.py``), also each algorithm's training env steps/s per team size. Writes
``<out>.json``, ``<out>.md`` and ``<out>.png`` and prints the markdown.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spnpolicy.bench.records import find_run_dirs, load_run, ordered  # noqa: E402
from spnpolicy.bench.stats import mean_ci  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "many-agents" / "team_size"


def learning_rows(records, at: dict[int, int] | None = None) -> list[dict]:
    """One row per (num_agents, algo): seeds, steps reached, final success and potential;
    ``at[n]``: team size n is read at each run's last evaluation at or before that step."""
    at = at or {}

    def last(run, n):
        return [h for h in run.history if h["step"] <= at.get(n, h["step"])][-1]

    coverage = [r for r in records if r.env == "coverage" and r.history]
    if not coverage:
        raise ValueError("no coverage run with an evaluation among the paths given")
    _, algos = ordered(coverage)
    labels = list(dict.fromkeys(_label(r) for r in sorted(
        coverage, key=lambda r: (algos.index(r.algo), _label(r) != r.algo, _label(r)))))
    rows = []
    for n in sorted({int(r.env_kwargs["num_agents"]) for r in coverage}):
        for algo in labels:
            runs = sorted((r for r in coverage
                           if _label(r) == algo and int(r.env_kwargs["num_agents"]) == n),
                          key=lambda r: r.seed)
            if not runs:
                continue
            final = [last(r, n) for r in runs]
            rows.append({
                "num_agents": n, "algo": algo, "seeds": [r.seed for r in runs],
                "grid_size": sorted({int(r.env_kwargs["grid_size"]) for r in runs}),
                "steps": sorted({int(h["step"]) for h in final}),
                "success": mean_ci([h["success_rate"] for h in final]).to_json(),
                "final_potential": mean_ci([h["final_potential"] for h in final]).to_json(),
            })
    return rows


#: The row labels' suffixes of warm-started runs: the critics taken from the source run, or
#: kept fresh (``init_partial`` left a critic tensor, ``modules.critic...``, untaken).
WARM_STARTS = ("warm start", "warm start, fresh critics")


#: Critics' factor graphs that make a row of their own, by their row label.
CRITIC_GRAPHS = {"nearest": "nearest pairs", "none": "unary critics"}


def _label(run) -> str:
    """The run's algorithm, with its :data:`CRITIC_GRAPHS` label, ``sibling pairs`` for a
    policy with them, ``centred critics`` for critics with centred tables, and a
    :data:`WARM_STARTS` suffix when it began from another run's learner."""
    parts = [CRITIC_GRAPHS[graph] for graph in [run.config.get("factor_graph")]
             if graph in CRITIC_GRAPHS]
    if run.config.get("sibling_pairs"):
        parts.append("sibling pairs")
    if run.config.get("critic_centred"):
        parts.append("centred critics")
    starts = [record for record in run.provenance if "init_from" in record]
    if starts:
        fresh = any(name.startswith("modules.critic")
                    for name in starts[0].get("kept_fresh", ()))
        parts.append(WARM_STARTS[fresh])
    return f"{run.algo} ({', '.join(parts)})" if parts else run.algo


def cost_rows(cost: dict) -> list[dict]:
    """``[{num_agents, algo, env_steps_per_s}]`` from a many_agents_cost.py file."""
    rows = []
    for team in cost["teams"]:
        for algo in ("spn-ac", "vdn"):
            if algo in team:
                rows.append({"num_agents": int(team["num_agents"]), "algo": algo,
                             "env_steps_per_s": float(team[algo]["env_steps_per_s"])})
    return rows


def _estimate(entry: dict, digits: int) -> str:
    low, high = entry["ci95"]
    text = f"{entry['value']:.{digits}f}"
    return text if low is None else f"{text} [{low:.{digits}f}, {high:.{digits}f}]"


def markdown(summary: dict) -> str:
    lines = ["| agents | grid | algo | seeds | env steps | greedy success | final potential |",
             "|---:|---|---|---:|---|---|---|"]
    for row in summary["learning"]:
        lines.append(
            f"| {row['num_agents']} | {'/'.join(map(str, row['grid_size']))} | {row['algo']} | "
            f"{len(row['seeds'])} | {', '.join(f'{s:,}' for s in row['steps'])} | "
            f"{_estimate(row['success'], 2)} | {_estimate(row['final_potential'], 2)} |")
    if summary["cost"]:
        lines += ["", "| agents | algo | training env steps/s |", "|---:|---|---:|"]
        lines += [f"| {row['num_agents']} | {row['algo']} | {row['env_steps_per_s']:,.1f} |"
                  for row in summary["cost"]]
    return "\n".join(lines)


def plot(summary: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if summary["cost"] else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 4.2))
    algos = dict.fromkeys(r["algo"] for r in summary["learning"] + summary["cost"])
    # ten colours, then the same colours with another marker and a dashed line
    colour = {algo: f"C{i % 10}" for i, algo in enumerate(algos)}
    style = {algo: ("o-", "D--", "^:")[min(i // 10, 2)] for i, algo in enumerate(algos)}
    for key, ax, label in (("success", axes[0], "greedy success"),
                           ("final_potential", axes[1], "final potential (0 = all goals)")):
        for algo in dict.fromkeys(r["algo"] for r in summary["learning"]):
            rows = [r for r in summary["learning"] if r["algo"] == algo]
            ax.plot([r["num_agents"] for r in rows], [r[key]["value"] for r in rows],
                    style[algo], label=algo, color=colour[algo])
        ax.set_xscale("log", base=2)
        ax.set_xlabel("agents")
        ax.set_ylabel(label)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=8)
    if summary["cost"]:
        ax = axes[2]
        for algo in dict.fromkeys(r["algo"] for r in summary["cost"]):
            rows = [r for r in summary["cost"] if r["algo"] == algo]
            ax.plot([r["num_agents"] for r in rows], [r["env_steps_per_s"] for r in rows],
                    "s-", label=algo, color=colour[algo])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("agents")
        ax.set_ylabel("training env steps/s")
        ax.legend(fontsize=8)
    rows = -(-len(labels) // 5)
    fig.tight_layout(rect=(0, 0.07 * rows, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _team_step(text: str) -> tuple[int, int]:
    try:
        n, steps = (int(part) for part in text.split("="))
    except ValueError:
        raise ValueError(f"--at takes N=STEPS with integers, got {text!r}") from None
    return n, steps


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories, or folders holding them")
    parser.add_argument("--cost", type=Path, help="a many_agents_cost.py results file")
    parser.add_argument("--at", action="append", default=[], metavar="N=STEPS",
                        help="read team size N at its runs' last evaluation at or before "
                        "STEPS (repeatable)")
    parser.add_argument("--out", type=Path, default=OUT,
                        help="prefix of the .json, .md and .png written")
    args = parser.parse_args(argv)
    try:
        at = dict(_team_step(text) for text in args.at)
        records = [load_run(path) for path in find_run_dirs(args.runs)]
        summary = {"learning": learning_rows(records, at), "at": at,
                   "cost": cost_rows(json.loads(args.cost.read_text())) if args.cost else [],
                   "cost_file": str(args.cost) if args.cost else None}
    except (ValueError, KeyError, OSError) as error:
        parser.error(str(error))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    text = markdown(summary)
    args.out.with_suffix(".md").write_text(text + "\n")
    plot(summary, args.out.with_suffix(".png"))
    print(text)
    return summary


if __name__ == "__main__":
    main()
