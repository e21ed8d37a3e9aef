"""The ``bench`` and ``plot`` commands (registered in ``spnpolicy.cli``).

```
spnpolicy bench coverage-quick-small --workers 2            # the README's quick start
spnpolicy bench matrix --algos spn-ac,vdn --seeds 3 --out runs/bench/matrix
spnpolicy bench coverage-paper --seeds 0,1 --algos spn-ac,vdn --ray auto
spnpolicy bench coverage-quick --algos spn-ac --set compile=true   # a config override
spnpolicy plot runs/bench/matrix                              # redraw from the run dirs
```
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from spnpolicy.cli_args import command, key_value

if TYPE_CHECKING:
    from spnpolicy.bench.records import RunRecord

__all__ = ["register"]


def _suite_listing() -> str:
    from spnpolicy.bench.suites import SUITES

    lines = []
    for suite in SUITES.values():
        p = suite.protocol
        lines.append(f"  {suite.name}: {suite.description}\n      tasks: "
                     f"{', '.join(suite.task_names())}\n      algorithms: "
                     f"{', '.join(suite.algos)}; {suite.seeds} seeds; {p.total_steps:,d} env "
                     f"steps, greedy evaluation every {p.eval_interval:,d} over "
                     f"{p.eval_episodes} episodes")
    return "suites:\n" + "\n".join(lines)


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``bench`` and ``plot`` to the ``spnpolicy`` subcommands."""
    bench = command(
        commands, _bench, "bench", help="run a benchmark suite (multi-seed, with tables and plots)",
        epilog=_suite_listing(), formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run every (task, algorithm, seed) of SUITE under the same env-step "
        "budget and greedy evaluation, each in OUT/runs/<task>/<algo>/s<seed>; finished "
        "runs are skipped and interrupted ones resumed. Writes OUT/summary.json, "
        "OUT/summary.md, PNG plots and OUT/marl_eval.json (the evaluations in marl-eval's "
        "JSON format, as BenchMARL writes them) of every run in OUT (this command's and "
        "those of earlier commands with other seeds or algorithms), and prints the table "
        "and the written files' paths.")
    bench.add_argument("suite", metavar="SUITE", help="suite name (listed below)")
    bench.add_argument("--out", default=None, help="output directory (default runs/bench/SUITE)")
    bench.add_argument("--seeds", default=None, help="a count (3: seeds 0, 1, 2) or a list "
                       "(0,4,7; one seed alone: 5,); default the suite's count")
    bench.add_argument("--total-steps", type=int, default=None,
                       help="env-step budget of every run (default the suite's)")
    bench.add_argument("--algos", type=_names, default=None, metavar="A,B",
                       help="only these algorithms of the suite")
    bench.add_argument("--tasks", type=_names, default=None, metavar="T,U",
                       help="only these tasks of the suite")
    bench.add_argument("--set", type=key_value, action="append", default=[], dest="config",
                       metavar="KEY=VALUE",
                       help="config override (repeatable) for every algorithm of the run "
                       "whose config has KEY, e.g. --set compile=true; the others ignore it "
                       "(a KEY no chosen algorithm has is an error); ALGO:KEY=VALUE sets it "
                       "for ALGO only, e.g. --set spn-ac:sibling_pairs=true; see "
                       "'spnpolicy config'")
    bench.add_argument("--workers", type=int, default=1,
                       help="parallel worker processes, one torch thread each (default 1)")
    bench.add_argument("--ray", default=None, metavar="ADDRESS",
                       help="run each run as a Ray task on the cluster at ADDRESS ('auto': "
                       "the cluster `ray start --head` started on this machine; 'local': a "
                       "new Ray instance for this command); needs the ray extra and OUT on "
                       "a filesystem the nodes share")

    plot = command(
        commands, _plot, "plot", help="redraw a benchmark's summary and plots from run directories",
        description="Read config.json and metrics.jsonl of the run directories (or of every "
        "run directory inside the given directories) and write summary.json, summary.md, "
        "the PNG plots and marl_eval.json (marl-eval's format).")
    plot.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                      help="run directories, or directories holding them (a bench's OUT)")
    plot.add_argument("--out", default=None,
                      help="output directory (default: RUN_DIR when only one is given)")
    plot.add_argument("--metric", default=None, help="evaluation metric to report (default "
                      "success_rate where every run has it, else return_mean)")


def _show(summary: dict, paths: list[Path]) -> None:
    from spnpolicy.bench.report import markdown

    print("\n" + markdown(summary))
    print("written:\n" + "\n".join(f"  {path}" for path in paths))


def _seeds_text(seeds: list[int]) -> str:
    """``[0, 1, 2]`` -> ``"seeds 0-2"``; ``[7]`` -> ``"seed 7"``; else the list."""
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    if seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"seeds {seeds[0]}-{seeds[-1]}"
    return "seeds " + ", ".join(map(str, seeds))


def _bench(args: argparse.Namespace) -> int:
    from spnpolicy.bench.report import write_report
    from spnpolicy.bench.runner import check_backend, parse_seeds, plan, run_all
    from spnpolicy.bench.suites import get_suite

    suite = get_suite(args.suite)
    out = Path(args.out if args.out is not None else f"runs/bench/{suite.name}")
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    runs = plan(suite, out, algos=args.algos, tasks=args.tasks, seeds=seeds,
                total_steps=args.total_steps, overrides=dict(args.config))
    check_backend(args.workers, args.ray)   # before the header line
    protocol = runs[0].config
    print(f"{suite.name}: {len(runs)} runs ({_seeds_text(sorted({r.seed for r in runs}))}), "
          f"{protocol['total_steps']:,d} env steps each, greedy "
          f"evaluation every {protocol['eval_interval']:,d} steps over "
          f"{protocol['eval_episodes']} episodes; output in {out}", flush=True)
    try:
        outcome = run_all(runs, workers=args.workers, ray_address=args.ray,
                          metric=suite.metric, log=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        print(f"\nspnpolicy bench: interrupted; run the same command again to continue: "
              f"finished runs in {out} are skipped, interrupted ones resume from their last "
              f"checkpoint", file=sys.stderr)
        return 130
    for run, error in outcome.failures:
        print(f"spnpolicy bench: {run.label()} failed ({run.run_dir}): {error}",
              file=sys.stderr)
    if not outcome.records:
        raise ValueError(f"no run of suite {suite.name!r} finished; see the errors above")
    # the summary covers OUT, not only this command's runs: earlier commands that wrote
    # other seeds or algorithms there would otherwise drop out of summary.md and the plots
    records = _records_in(out)
    _warn_mixed_budgets(records, "bench")
    summary, paths = write_report(records, out, suite.name, suite.metric,
                                  suite.task_names(), command=args.command_line)
    _show(summary, paths)
    return 1 if outcome.failures else 0


def _records_in(out: Path) -> list[RunRecord]:
    """The record of every run directory under a bench's ``out``; one that cannot be read
    (a damaged ``config.json``) is left out with a warning on stderr."""
    from spnpolicy.bench.records import find_run_dirs, load_run

    records = []
    for path in find_run_dirs([out]):
        try:
            records.append(load_run(path))
        except ValueError as error:
            print(f"spnpolicy bench: warning: {path} is left out of the summary: {error}",
                  file=sys.stderr)
    return records


def _warn_mixed_budgets(records, command: str = "plot") -> None:
    """A warning on stderr for each task whose runs have different env-step budgets."""
    budgets: dict[str, set[int]] = {}
    for record in records:
        budgets.setdefault(record.task, set()).add(record.total_steps)
    for task, steps in sorted(budgets.items()):
        if len(steps) > 1:
            print(f"spnpolicy {command}: warning: the runs of task {task!r} have different "
                  f"budgets ({', '.join(f'{s:,d}' for s in sorted(steps))} env steps); each "
                  f"run's final evaluation is compared as it is", file=sys.stderr)


def _plot(args: argparse.Namespace) -> int:
    from spnpolicy.bench.records import find_run_dirs, load_run
    from spnpolicy.bench.report import write_report
    from spnpolicy.bench.suites import SUITES

    if args.out is None and len(args.run_dirs) > 1:
        raise ValueError(f"give --out when plotting {len(args.run_dirs)} paths")
    out = Path(args.out if args.out is not None else args.run_dirs[0])
    records = [load_run(path) for path in find_run_dirs(args.run_dirs)]
    _warn_mixed_budgets(records)
    suites = {r.suite for r in records}
    suite = SUITES.get(suites.pop()) if len(suites) == 1 else None
    summary, paths = write_report(records, out, suite.name if suite else None,
                                  args.metric or (suite.metric if suite else None),
                                  suite.task_names() if suite else (),
                                  command=args.command_line)
    _show(summary, paths)
    return 0
