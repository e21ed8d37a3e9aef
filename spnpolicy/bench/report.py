"""Summarise runs into ``summary.json`` and ``summary.md`` (and, by ``write_report``,
``marl_eval.json``: the runs in marl-eval's format, ``bench.marl_eval``).

Scores are the final greedy evaluation of each finished run. Per (task, algorithm): the
metric's and the return's mean with a 95% bootstrap CI over seeds and, for matrix games,
the fraction of seeds whose greedy joint action is optimal; per algorithm: the IQM of the
metric over all its runs of all tasks (a return, on several tasks, min-max normalised per
task over all algorithms' runs first: ``iqm_scale``).

``summary.json`` layout::

    {"suite": "matrix" | null, "metric": "success_rate", "tasks": [...], "algos": [...],
     "total_steps": [5000], "unfinished": ["climbing spn-ac s3", ...],
     "results": {task: {algo: {"seeds": [0, 1, ...], "metric": E, "return": E,
                               "scores": [s0, s1, ...], "returns": [r0, r1, ...],
                               "curves": [[[step, metric], ...], ...],
                               "optimal_fraction": E, "optimal_seeds": 7}}},   # matrix only
     "iqm": {algo: E}, "iqm_scale": "metric" | "min-max per task",
     "trained_at": {"commits": [{"commit": "c0546c8", "from_step": 0, "to_step": 500000,
                                 "runs": 21}, ...], "unrecorded": 0},
     "provenance": {"command": "spnpolicy bench ...", "commit": "a1b2c3d" | null,
                    "machine": {"platform": ..., "cpu_count": 2, "torch": ...}}}

where ``E`` is ``{"value": v, "ci95": [low, high], "n": runs}`` (null bounds: one run).
``trained_at`` says which commits of the package trained the runs, over which env steps
(from each run's ``provenance.jsonl``; a run resumed at a later commit counts under both),
and ``provenance`` where the summary itself was made.
``scores``, ``returns`` and ``curves`` are per seed, in the order of ``seeds``: the final
metric, the final return and every evaluation's ``(step, metric)``, so that a summary kept
without its run directories can still be re-aggregated or merged with more seeds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spnpolicy.bench.marl_eval import MARL_EVAL_JSON, write_marl_eval
from spnpolicy.bench.matrix import is_matrix_game, reached_optimum
from spnpolicy.bench.records import RunRecord, ordered
from spnpolicy.bench.stats import Estimate, iqm_ci, mean_ci
from spnpolicy.machine import git_commit, machine

__all__ = ["SUMMARY_JSON", "SUMMARY_MD", "choose_metric", "markdown", "summarise", "trained_at",
           "write_report", "write_summary"]

SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"


def choose_metric(records: Sequence[RunRecord]) -> str:
    """``success_rate`` when every run's evaluations report it, else ``return_mean``."""
    has_success = all("success_rate" in r.final for r in records if r.history)
    return "success_rate" if has_success else "return_mean"


def _cell(runs: list[RunRecord], metric: str) -> dict[str, Any]:
    scores = [float(r.final[metric]) for r in runs]
    returns = [float(r.final["return_mean"]) for r in runs]
    cell = {"seeds": [r.seed for r in runs],
            "metric": mean_ci(scores).to_json(), "return": mean_ci(returns).to_json(),
            "scores": scores, "returns": returns,
            "curves": [[[int(e["step"]), float(e[metric])] for e in r.history if metric in e]
                       for r in runs]}
    if is_matrix_game(runs[0].env):
        flags = [float(reached_optimum(r.final)) for r in runs]
        cell["optimal_fraction"] = mean_ci(flags).to_json()
        cell["optimal_seeds"] = int(sum(flags))
    return cell


def trained_at(records: Sequence[RunRecord]) -> dict[str, Any]:
    """The commits that trained ``records``, oldest first: each with the env steps it trained
    (``from_step`` to ``to_step``, over all runs) and how many runs; ``unrecorded``: runs
    without provenance records. A process counts from the step it started at to the step the
    next one started at (the run's last evaluation for the last): one killed and resumed
    from the same checkpoint trained nothing that was kept."""
    spans: dict[str, dict[str, Any]] = {}
    unrecorded = 0
    for record in records:
        if not record.provenance:
            unrecorded += 1
            continue
        starts = sorted(record.provenance, key=lambda p: int(p["step"]))
        ends = [int(p["step"]) for p in starts[1:]] + [int(record.final.get("step", 0))]
        for start, end in zip(starts, ends):
            if end <= int(start["step"]):
                continue
            commit = start.get("commit") or "unknown"
            span = spans.setdefault(commit, {"commit": commit, "from_step": int(start["step"]),
                                             "to_step": end, "runs": set()})
            span["from_step"] = min(span["from_step"], int(start["step"]))
            span["to_step"] = max(span["to_step"], end)
            span["runs"].add((record.task, record.algo, record.seed))
    commits = sorted(spans.values(), key=lambda span: (span["from_step"], span["commit"]))
    return {"commits": [dict(span, runs=len(span["runs"])) for span in commits],
            "unrecorded": unrecorded}


def _trained_at_line(made: dict[str, Any]) -> str:
    def runs(count: int) -> str:
        return f"{count} run{'s' if count != 1 else ''}"
    if not made["commits"]:
        return (f"Which commit trained the runs is not recorded ({runs(made['unrecorded'])} "
                f"made before `provenance.jsonl` was kept).")
    parts = [f"{c['commit']} (steps {c['from_step']:,d} to {c['to_step']:,d}, "
             f"{runs(c['runs'])})" for c in made["commits"]]
    missing = (f"; {runs(made['unrecorded'])} without a record of it"
               if made["unrecorded"] else "")
    return f"Trained at commit {', '.join(parts)}{missing}."


def provenance(command: str | None = None) -> dict[str, Any]:
    """How the summary was made: ``command`` (the command line, if known), the git commit of
    the package's checkout (None outside one; ``+dirty`` with uncommitted changes) and the
    machine."""
    return {"command": command, "commit": git_commit(), "machine": machine()}


def summarise(records: Sequence[RunRecord], suite: str | None = None,
              metric: str | None = None, task_order: Sequence[str] = (),
              command: str | None = None) -> dict[str, Any]:
    """The summary (module docstring) of the finished runs among ``records``."""
    finished = [r for r in records if r.finished]
    if not finished:
        raise ValueError(f"no finished run among the {len(records)} given: nothing to "
                         f"summarise")
    metric = metric or choose_metric(finished)
    lacking = sorted({f"{r.task} {r.algo}" for r in finished if metric not in r.final})
    if lacking:
        common = set.intersection(*({k for k, v in r.final.items() if k != "step" and
                                     isinstance(v, (int, float))} for r in finished))
        raise ValueError(f"metric {metric!r} is missing from the evaluations of "
                         f"{', '.join(lacking)}; metrics every run has: "
                         f"{', '.join(sorted(common))}")
    tasks, algos = ordered(finished, task_order)
    results: dict[str, dict[str, Any]] = {}
    for task in tasks:
        for algo in algos:
            runs = sorted((r for r in finished if r.task == task and r.algo == algo),
                          key=lambda r: r.seed)
            if runs:
                results.setdefault(task, {})[algo] = _cell(runs, metric)
    scale = IQM_RAW if metric == "success_rate" or len(tasks) == 1 else IQM_MIN_MAX
    on_scale = _iqm_scale(finished, metric, scale)
    iqm = {}
    for algo in algos:
        per_task = [[on_scale(r) for r in finished if r.task == task and r.algo == algo]
                    for task in tasks]
        iqm[algo] = iqm_ci([scores for scores in per_task if scores]).to_json()
    return {"suite": suite, "metric": metric, "tasks": tasks, "algos": algos,
            "total_steps": sorted({r.total_steps for r in finished}),
            "unfinished": [f"{r.task} {r.algo} s{r.seed}" for r in records if not r.finished],
            "results": results, "iqm": iqm, "iqm_scale": scale,
            "trained_at": trained_at(finished), "provenance": provenance(command)}


#: ``iqm_scale``: the metric pooled as it is (success rates, or a single task), or each
#: task's scores min-max normalised over every algorithm's runs of that task first (returns
#: of different tasks have different scales: pooled raw, the largest-scale task decides)
IQM_RAW, IQM_MIN_MAX = "metric", "min-max per task"


def _iqm_scale(finished: Sequence[RunRecord], metric: str, scale: str):
    """A run's final ``metric`` on the IQM's ``scale``: itself, or ``(score - lo) / (hi -
    lo)`` with ``lo``, ``hi`` the lowest and highest of all runs of its task (0 where they
    are equal)."""
    if scale == IQM_RAW:
        return lambda run: run.final[metric]
    bounds: dict[str, tuple[float, float]] = {}
    for run in finished:
        low, high = bounds.get(run.task, (run.final[metric], run.final[metric]))
        bounds[run.task] = (min(low, run.final[metric]), max(high, run.final[metric]))

    def normalised(run: RunRecord) -> float:
        low, high = bounds[run.task]
        return 0.0 if high == low else (run.final[metric] - low) / (high - low)
    return normalised


def _estimate(entry: dict[str, Any] | None, digits: int = 2) -> str:
    if entry is None:
        return "–"
    low, high = entry["ci95"]
    nan = float("nan")
    return Estimate(entry["value"], nan if low is None else low, nan if high is None else high,
                    entry["n"]).format(digits)


def _table(summary: dict[str, Any], rows: list[str], cell) -> list[str]:
    algos = summary["algos"]
    lines = ["| task | " + " | ".join(algos) + " |", "|---" * (len(algos) + 1) + "|"]
    for task in rows:
        entries = summary["results"].get(task, {})
        lines.append(f"| {task} | " + " | ".join(cell(entries.get(a)) for a in algos) + " |")
    return lines


def markdown(summary: dict[str, Any]) -> str:
    """The summary as markdown: the metric per task (and its IQM), the seeds reaching an
    optimal joint action in the matrix games, and the return per task."""
    metric, tasks = summary["metric"], summary["tasks"]
    budgets = ", ".join(f"{b:,d}" for b in summary["total_steps"])
    title = f"## {summary['suite']}" if summary["suite"] else "## Benchmark summary"
    normalised = (" (each task's scores min-max normalised over all algorithms' runs of "
                  "it, as the tasks' returns have different scales)"
                  if summary.get("iqm_scale") == IQM_MIN_MAX else "")
    protocol = (f"Final greedy evaluation after {budgets} env steps per run; mean [95% "
                f"bootstrap CI] over seeds; IQM over all runs of all tasks{normalised}.")
    lines = [title, "", protocol, "", f"### {metric}", ""]
    lines += _table(summary, tasks, lambda e: _estimate(e and e["metric"]))
    lines.append("| **IQM** | " + " | ".join(_estimate(summary["iqm"][a])
                                               for a in summary["algos"]) + " |")
    games = [t for t in tasks if any("optimal_seeds" in e
                                     for e in summary["results"][t].values())]
    if games:
        lines += ["", "### Seeds reaching an optimal joint action", ""]
        lines += _table(summary, games, lambda e: "–" if e is None else
                        f"{e['optimal_seeds']}/{len(e['seeds'])}")
    if metric != "return_mean":   # else the metric's table above is already the return
        lines += ["", "### return_mean", ""]
        lines += _table(summary, tasks, lambda e: _estimate(e and e["return"], 3))
    if summary["unfinished"]:
        lines += ["", f"Not counted (unfinished): {', '.join(summary['unfinished'])}."]
    if summary.get("trained_at"):
        lines += ["", _trained_at_line(summary["trained_at"])]
    made = summary.get("provenance") or {}
    if made:
        machine = made.get("machine", {})
        lines += ["", f"Command: `{made.get('command')}`; commit {made.get('commit')}; "
                      f"{machine.get('platform')}, {machine.get('cpu_count')} CPUs, "
                      f"torch {machine.get('torch')}."]
    return "\n".join(lines) + "\n"


def write_summary(summary: dict[str, Any], out: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``summary.json`` and ``summary.md`` into ``out``; their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / SUMMARY_JSON, out / SUMMARY_MD
    json_path.write_text(json.dumps(summary, indent=2) + "\n")
    md_path.write_text(markdown(summary))
    return json_path, md_path


def write_report(records: Sequence[RunRecord], out: str | os.PathLike, suite: str | None = None,
                 metric: str | None = None, task_order: Sequence[str] = (),
                 command: str | None = None) -> tuple[dict[str, Any], list[Path]]:
    """Summarise ``records``, draw their plots and export them for marl-eval into ``out``;
    the summary and the paths written (summary.json, summary.md, the PNGs, marl_eval.json).
    ``command``: recorded in the summary."""
    from spnpolicy.bench.plots import (
        LEARNING_CURVES_PNG,
        MATRIX_PNG,
        PENALTY_PNG,
        TEAM_PNG,
        plot_learning_curves,
        plot_matrix_optimal,
        plot_success_vs_penalty,
        plot_success_vs_team,
    )

    summary = summarise(records, suite, metric, task_order, command)
    paths = list(write_summary(summary, out))
    out = Path(out)
    paths.append(plot_learning_curves(records, summary["metric"], out / LEARNING_CURVES_PNG,
                                      summary["tasks"]))
    for extra in (plot_matrix_optimal(summary, out / MATRIX_PNG),
                  plot_success_vs_penalty(records, out / PENALTY_PNG),
                  plot_success_vs_team(records, out / TEAM_PNG)):
        if extra is not None:
            paths.append(extra)
    paths.append(write_marl_eval(records, out / MARL_EVAL_JSON))
    return summary, paths
