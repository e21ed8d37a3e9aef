"""Plots of a benchmark (matplotlib, Agg backend, PNG files).

- ``learning_curves.png``: the metric of the greedy evaluations vs env steps, mean over
  seeds with a 95% bootstrap CI band, one panel per task, one line per algorithm.
- ``matrix_optimal.png``: per matrix game and algorithm, the fraction of seeds whose final
  greedy joint action is optimal, with its 95% bootstrap CI.
- ``success_vs_penalty.png``: for tasks whose env takes a ``penalty`` (the lift task), the
  final greedy success against the penalty, one line per algorithm (mean over seeds, 95%
  bootstrap CI), one panel per team size.
- ``success_vs_team.png``: the same against the team size, one panel per penalty.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spnpolicy.bench.records import RunRecord, ordered
from spnpolicy.bench.stats import mean_ci

__all__ = ["LEARNING_CURVES_PNG", "MATRIX_PNG", "PENALTY_PNG", "TEAM_PNG", "learning_curve",
           "plot_learning_curves", "plot_matrix_optimal", "plot_success_vs_penalty",
           "plot_success_vs_team"]

LEARNING_CURVES_PNG = "learning_curves.png"
MATRIX_PNG = "matrix_optimal.png"
PENALTY_PNG = "success_vs_penalty.png"
TEAM_PNG = "success_vs_team.png"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curve(runs: Sequence[RunRecord], metric: str) -> np.ndarray:
    """``[4, steps]``: env steps, mean, CI low, CI high of ``metric`` over ``runs`` (seeds)
    at the evaluation steps every run has reached (NaN bounds with one run)."""
    steps = sorted(set.intersection(*({h["step"] for h in r.history if metric in h}
                                      for r in runs)))
    rows = []
    for step in steps:
        values = [next(h[metric] for h in r.history if h["step"] == step) for r in runs]
        estimate = mean_ci(values)
        rows.append((step, estimate.value, estimate.low, estimate.high))
    return np.array(rows, dtype=float).T.reshape(4, len(steps))


def _colors(algos: Sequence[str]) -> dict[str, Any]:
    plt = _pyplot()
    cycle = plt.get_cmap("tab10")
    return {algo: cycle(i % 10) for i, algo in enumerate(algos)}


def plot_learning_curves(records: Sequence[RunRecord], metric: str, path: str | os.PathLike,
                         task_order: Sequence[str] = ()) -> Path:
    """Draw the learning curves of ``records`` (finished or not) to ``path``."""
    plt = _pyplot()
    from matplotlib.lines import Line2D

    records = [r for r in records if r.history]
    tasks, algos = ordered(records, task_order)
    colors = _colors(algos)
    cols = min(4, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    legend_inches = 0.35 + 0.22 * math.ceil(len(algos) / 4)
    fig, axes = plt.subplots(rows, cols, figsize=(max(4.0 * cols, 8.0),
                                                  3.2 * rows + legend_inches), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        for algo in algos:
            runs = [r for r in records if r.task == task and r.algo == algo]
            if not runs:
                continue
            steps, mean, low, high = learning_curve(runs, metric)
            ax.plot(steps, mean, color=colors[algo])
            if not np.isnan(low).all():
                ax.fill_between(steps, low, high, color=colors[algo], alpha=0.15, linewidth=0)
        ax.set_title(task)
        ax.set_xlabel("env steps")
        ax.set_ylabel(metric)
        if metric.endswith("_rate"):
            ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    seeds = {algo: len({r.seed for r in records if r.algo == algo}) for algo in algos}
    handles = [Line2D([], [], color=colors[algo], label=f"{algo} ({seeds[algo]} seeds)")
               for algo in algos]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(algos), 4), frameon=False,
               fontsize="small", title_fontsize="small",
               title="mean over seeds; bands: 95% bootstrap CI")
    fig.tight_layout(rect=(0, legend_inches / fig.get_figheight(), 1, 1))
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_matrix_optimal(summary: dict[str, Any], path: str | os.PathLike) -> Path | None:
    """Bar chart of the optimal-joint-action fraction per matrix game and algorithm from a
    summary (``report.summarise``); None (and no file) when it has no matrix game."""
    games = [t for t in summary["tasks"]
             if any("optimal_fraction" in e for e in summary["results"][t].values())]
    if not games:
        return None
    plt = _pyplot()
    algos = summary["algos"]
    colors = _colors(algos)
    width = 0.8 / len(algos)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.12 * len(games) * len(algos) + 3), 4.2))
    x = np.arange(len(games))
    for i, algo in enumerate(algos):
        entries = [summary["results"][g].get(algo, {}).get("optimal_fraction") for g in games]
        value = np.array([np.nan if e is None else e["value"] for e in entries])
        low = np.array([np.nan if e is None or e["ci95"][0] is None else e["ci95"][0]
                        for e in entries])
        high = np.array([np.nan if e is None or e["ci95"][1] is None else e["ci95"][1]
                         for e in entries])
        errors = np.nan_to_num(np.stack([value - low, high - value]), nan=0.0)
        ax.bar(x + (i - (len(algos) - 1) / 2) * width, np.nan_to_num(value), width,
               yerr=errors, error_kw={"elinewidth": 0.8, "capsize": 1.5}, color=colors[algo],
               label=algo)
    ax.set_xticks(x, games, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("fraction of seeds optimal")
    ax.set_title("Final greedy joint action optimal (95% bootstrap CI)")
    ax.legend(fontsize="small", frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_success_vs_penalty(records: Sequence[RunRecord], path: str | os.PathLike
                            ) -> Path | None:
    """Final greedy ``success_rate`` against the env argument ``penalty`` of the finished
    runs that have both, one panel per ``num_agents``, one line per algorithm; None (and no
    file) when fewer than two penalties were run."""
    return _plot_success_against(
        records, path, "penalty", "num_agents", lambda team: f"{team:g} agents",
        "Success against the miscoordination penalty (95% bootstrap CI over seeds)")


def plot_success_vs_team(records: Sequence[RunRecord], path: str | os.PathLike
                         ) -> Path | None:
    """Final greedy ``success_rate`` against the env argument ``num_agents`` of the finished
    runs that take a ``penalty``, one panel per penalty, one line per algorithm; None (and
    no file) when fewer than two team sizes were run."""
    return _plot_success_against(
        records, path, "num_agents", "penalty", lambda penalty: f"penalty {penalty:g}",
        "Success against the team size (95% bootstrap CI over seeds)")


def _plot_success_against(records: Sequence[RunRecord], path: str | os.PathLike, x_key: str,
                          panel_key: str, panel_title, title: str) -> Path | None:
    """Final greedy success against the env argument ``x_key``, one panel per value of
    ``panel_key``, over the finished runs whose env takes a ``penalty`` (the lift task)."""
    runs = [r for r in records if r.finished and "penalty" in r.env_kwargs
            and "success_rate" in r.final]

    def value(run, key):            # None: the env's default
        return float(run.env_kwargs[key]) if key in run.env_kwargs else None

    runs = [r for r in runs if value(r, x_key) is not None]
    if len({value(r, x_key) for r in runs}) < 2:
        return None
    plt = _pyplot()
    panels = sorted({value(r, panel_key) for r in runs}, key=lambda v: (v is not None, v))
    _, algos = ordered(runs)
    colors = _colors(algos)
    every_x = sorted({value(r, x_key) for r in runs})
    # algorithms side by side around each x, so that equal values stay visible
    step = 0.3 * min(b - a for a, b in zip(every_x, every_x[1:])) / max(len(algos), 1)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 1.8, 3.6),
                             squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for a, algo in enumerate(algos):
            mine = [r for r in runs if r.algo == algo and value(r, panel_key) == panel]
            xs = sorted({value(r, x_key) for r in mine})
            if not xs:
                continue
            estimates = [mean_ci([float(r.final["success_rate"]) for r in mine
                                  if value(r, x_key) == x]) for x in xs]
            mean = np.array([e.value for e in estimates])
            low = np.array([e.low if not math.isnan(e.low) else e.value for e in estimates])
            high = np.array([e.high if not math.isnan(e.high) else e.value for e in estimates])
            shift = (a - (len(algos) - 1) / 2) * step
            ax.errorbar(np.array(xs) + shift, mean, yerr=np.stack([mean - low, high - mean]),
                        marker="o", capsize=2, color=colors[algo], label=algo)
        ax.set_xticks(every_x)
        ax.set_title(panel_title(panel) if panel is not None else
                     f"{panel_key.replace('num_agents', 'agents')}: default")
        ax.set_xlabel(x_key.replace("num_agents", "agents"))
        ax.set_ylim(-0.05, 1.05)
    axes[0][0].set_ylabel("final greedy success")
    axes[0][-1].legend(fontsize="small", frameon=False, loc="center left",
                       bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
