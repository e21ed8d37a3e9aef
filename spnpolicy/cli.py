"""The ``spnpolicy`` command line.

```
spnpolicy train spn-ac climbing --seed 0
spnpolicy train spn-ac coverage --env-kw num_agents=3 --env-kw grid_size=6 \\
    --total-steps 100000 --out-dir runs/cov3
spnpolicy train --out-dir runs/cov3 --resume                  # continue with the saved config
spnpolicy train spn-ac coverage --env-kw num_agents=3 --env-kw grid_size=6 \\
    --init-from runs/cov3 --set gradient_steps=4 --out-dir runs/cov3-g4     # new run, its learner
spnpolicy train spn-ac coverage --env-kw num_agents=4 --env-kw grid_size=8 \\
    --env-kw observation=nearest --env-kw neighbours=3 --set param_head=agents \\
    --set critic_input=agents --out-dir runs/near4      # agents' networks, any team size
spnpolicy train spn-ac coverage --env-kw num_agents=6 --env-kw grid_size=8 \\
    --env-kw observation=nearest --env-kw neighbours=3 --set param_head=agents \\
    --set critic_input=agents --init-from runs/near4 --init-partial --out-dir runs/near6
spnpolicy config spn-ac climbing          # every config field, its value and meaning
spnpolicy config spn-ac --env climbing --out cfg.json        # the same as a JSON file
spnpolicy config spn-ac --env climbing --out cfg.yaml        # or YAML (PyYAML)
spnpolicy train spn-ac climbing --config cfg.json --set actor_lr=1e-3   # --set wins
spnpolicy bench matrix --workers 2        # a benchmark suite: runs, table, plots
spnpolicy plot runs/bench/matrix          # redraw a benchmark's table and plots
spnpolicy query runs/cov3 --fix 2=noop    # a trained policy given agent 2's noop
spnpolicy evaluate runs/cov3 --episodes 200 --out cov3-eval.json   # greedy vs uniform random
```

A run directory holds ``config.json``, ``metrics.jsonl`` / ``metrics.csv`` (one line per
evaluation, and a training record, ``"phase": "train"``, every ``log_interval`` env steps)
and ``checkpoints/last.pt`` (:mod:`spnpolicy.training.rundir`); progress goes to stderr,
evaluations to stdout. Every bad input ends in one ``spnpolicy: error:`` line and
exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import textwrap
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spnpolicy.algos.config import field_docs, parse_field_value
from spnpolicy.algos.config_files import read_config_file, write_config_file
from spnpolicy.algos.registry import ALGORITHMS, get_algorithm, make_config
from spnpolicy.algos.spn_ac import ACTINGS
from spnpolicy.cli_args import command, key_value, literal
from spnpolicy.envs.registry import ENV_DESCRIPTIONS, ENV_NAMES, LBF_EXAMPLE, registered_envs
from spnpolicy.envs.validation import check_int
from spnpolicy.evaluate import SAVED_RUN_EPISODES, SAVED_RUN_SEED, evaluate_saved_run
from spnpolicy.training.rundir import RunBusyError

__all__ = ["build_parser", "main"]

#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130


def _env_listing() -> str:
    from spnpolicy.envs.mpe import MPE_TASKS

    def entry(title: str, description: str) -> str:
        return f"  {title}\n" + textwrap.fill(description, width=88, initial_indent="      ",
                                              subsequent_indent="      ")

    lines = [entry(name, ENV_DESCRIPTIONS[name]) for name in ENV_NAMES
             if not name.startswith("mpe/")]
    lines.append(entry(", ".join(f"mpe/{task}" for task in MPE_TASKS), ENV_DESCRIPTIONS["mpe/"]))
    lines.append(entry(f"lbf/<lbforaging id>, e.g. {LBF_EXAMPLE}", ENV_DESCRIPTIONS["lbf/"]))
    lines += [f"  {name} (registered with spnpolicy.register_env)" for name in registered_envs()]
    lines.append(entry("MODULE:FACTORY or FILE.py:FACTORY", "your own env: a callable returning "
                       "a PettingZoo ParallelEnv with discrete actions (examples/own_env.py)"))
    return "\n".join(lines)


def _listing() -> str:
    width = max(map(len, ALGORITHMS))
    algos = "\n".join(f"  {name:<{width}}  {spec.summary}" for name, spec in ALGORITHMS.items())
    return (f"algorithms:\n{algos}\n\nenvironments (--env-kw sets their arguments):\n"
            f"{_env_listing()}\n\n'spnpolicy config ALGO ENV' lists an algorithm's config "
            f"keys.")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block): ``PROG: error: ... (see PROG --help)``."""

    def error(self, message: str):
        extra = message.removeprefix("unrecognized arguments:").split()
        if message.startswith("unrecognized arguments:") and \
                any("=" in a for a in extra) and not any(a.startswith("-") for a in extra):
            # '--env-kw a=1 b=2': each pair needs its own flag
            message += ("; each KEY=VALUE needs its own flag: --env-kw num_agents=3 "
                        "--env-kw grid_size=6, not --env-kw num_agents=3 grid_size=6 (the same "
                        "for --set and --fix)")
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="spnpolicy", description="Train and evaluate tractable joint policies for "
        "cooperative multi-agent RL.", epilog=_listing(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = command(
        commands, _train, "train", help="train an algorithm on an environment", epilog=_listing(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train ALGO on ENV, evaluating greedily at fixed intervals; writes a run "
        "directory: config.json, metrics.jsonl and metrics.csv (one record per evaluation, and "
        "every log_interval env steps a training record marked phase=train: the training "
        "episodes' returns and lengths and the losses), "
        "checkpoints/last.pt, and TensorBoard event files in tensorboard/ when the "
        "tensorboard package is installed (view them with 'tensorboard --logdir OUT_DIR'); "
        "with --set tracking=mlflow also an MLflow run (MLFLOW_TRACKING_URI, else "
        "OUT_DIR/mlflow.db). "
        "Ctrl-C writes a checkpoint and prints how to resume.")
    train.add_argument("algo", metavar="ALGO", nargs="?", default=None,
                       help="algorithm name (listed below); optional with --resume")
    train.add_argument("env", metavar="ENV", nargs="?", default=None,
                       help="environment name (listed below); optional with --resume")
    train.add_argument("--seed", type=int, default=None,
                       help="run seed (default 0; with --resume the saved one)")
    train.add_argument("--total-steps", type=int, default=None,
                       help="env-step budget (default: the algorithm's default for ENV; with "
                       "--resume the saved one, or a larger one to extend the run)")
    train.add_argument("--out-dir", default=None,
                       help="run directory (default runs/ALGO_ENV_sSEED_TIMESTAMP)")
    train.add_argument("--env-kw", type=key_value, action="append", default=[],
                       metavar="KEY=VALUE", help="environment argument (repeatable), "
                       "value as a Python literal, e.g. --env-kw num_agents=3 "
                       "--env-kw reward=sparse")
    train.add_argument("--set", type=key_value, action="append", default=[], dest="config",
                       metavar="KEY=VALUE", help="config override (repeatable), e.g. "
                       "--set actor_lr=1e-3 --set policy_hidden=64,64; see 'spnpolicy config'")
    train.add_argument("--config", default=None, dest="config_file", metavar="FILE",
                       help="config file: a JSON object of config keys and values (the keys "
                       "--set takes), or a YAML mapping in a .yaml / .yml file (needs PyYAML), "
                       "as 'spnpolicy config ALGO --env ENV --out FILE' writes it; --set and "
                       "--total-steps override its values")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in OUT_DIR from its last checkpoint, with its "
                       "saved algorithm, env, seed, env arguments and config (any given "
                       "again must match)")
    train.add_argument("--init-from", default=None, metavar="RUN",
                       help="start a new run with the learner (networks and optimizer "
                       "moments) of RUN, a run directory or checkpoint of the same ALGO; "
                       "the config, env and budget are this command's, so --set may change "
                       "anything that keeps the networks' shapes")
    train.add_argument("--init-partial", action="store_true",
                       help="with --init-from: take only the tensors whose shapes fit, "
                       "keep the others (e.g. per-group embeddings of another team size) "
                       "and the optimizers fresh, and print which were kept")
    train.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                       help="show a progress bar on stderr (default: when stderr is a "
                       "terminal)")
    train.add_argument("--quiet", action="store_true", help="no line per evaluation")


    config = command(
        commands, _config, "config",
        help="show an algorithm's config for an env, or write it to a file",
        description="List every config key of ALGO with its value (ENV's defaults when an env "
        "is given) and meaning; with --out, write them to a JSON file (a YAML file when FILE "
        "ends in .yaml or .yml) instead, for 'spnpolicy train ALGO ENV --config FILE'.")
    config.add_argument("algo", metavar="ALGO")
    config.add_argument("env", metavar="ENV", nargs="?", default=None,
                        help="environment whose defaults apply (the same as --env ENV)")
    config.add_argument("--env", dest="env_option", default=None, metavar="ENV",
                        help="environment whose defaults apply (default: none, the config "
                        "class's own defaults)")
    config.add_argument("--out", default=None, metavar="FILE",
                        help="write the config to FILE (JSON; YAML for .yaml / .yml) instead "
                        "of listing it")

    evaluate = command(
        commands, _evaluate, "evaluate",
        help="evaluate a trained run's agent beside uniform random actions",
        description="Play N episodes (--episodes) of the run's env, its env arguments, "
        "seeded with S (--seed), with the run's agent acting greedily, then the same episodes "
        "with uniform random joint actions (and with --stochastic, with the agent's sampling "
        "policy); print one JSON object: the run's algo, env and env_kwargs, and for each "
        "policy return_mean, return_std, length_mean, episodes, success_rate (envs that "
        "report success) and final_potential (envs with a potential, e.g. coverage: the mean "
        "potential of the episodes' last states, 0 when every goal is covered), which shows "
        "progress on sparse tasks before any success.")
    evaluate.add_argument("run", metavar="RUN_DIR",
                          help="run directory (config.json + checkpoints/last.pt) or a "
                          "checkpoint file in one")
    evaluate.add_argument("--episodes", type=int, default=SAVED_RUN_EPISODES, metavar="N",
                          help=f"episodes per policy (default {SAVED_RUN_EPISODES})")
    evaluate.add_argument("--seed", type=int, default=SAVED_RUN_SEED, metavar="S",
                          help=f"seed of the episodes and of the random actions (default "
                          f"{SAVED_RUN_SEED})")
    evaluate.add_argument("--out", default=None, metavar="FILE",
                          help="also write the JSON object to FILE")
    evaluate.add_argument("--stochastic", action="store_true",
                          help="also evaluate the agent's sampling policy (spn-ac: samples of "
                          "the joint policy; Q-learners: epsilon-greedy at epsilon_finish)")
    evaluate.add_argument("--acting", default=None, choices=ACTINGS,
                          help="spn-ac runs: act by the joint policy's mode, or by the "
                          "critics' best joint action (default: the run's own acting)")

    # Other commands live in their own modules: each `register(commands)` adds a
    # subparser whose `handler(args) -> int` runs it.
    for register in _registrars():
        register(commands)
    return parser


def _registrars() -> list:
    """The ``register(commands)`` functions of the commands defined outside this module."""
    from spnpolicy import query
    from spnpolicy.bench import cli as bench_cli

    return [bench_cli.register, query.register]


def _overrides(algo: str, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    cls = get_algorithm(algo).config_cls
    return {key: parse_field_value(cls, key, value) for key, value in pairs}


def _resumed(args: argparse.Namespace) -> None:
    """Fill ALGO, ENV and --seed from the saved run when resuming without them."""
    from spnpolicy.training.rundir import RunDir

    if args.out_dir is None:
        raise ValueError("--resume needs the --out-dir of the run to resume")
    run = RunDir(args.out_dir)
    if not run.is_run():
        if args.algo is None or args.env is None:
            what = "holds no run (config.json is missing)" if run.path.is_dir() else \
                "does not exist"
            raise ValueError(f"--out-dir {args.out_dir} {what}; give ALGO and ENV to start a "
                             f"run there")
        return  # nothing to resume yet: a new run starts
    saved = run.read_config()
    for name in ("algo", "env", "seed"):
        if getattr(args, name) is None:
            setattr(args, name, saved[name])


def _train(args: argparse.Namespace) -> int:
    import spnpolicy

    if args.resume:
        _resumed(args)
    elif args.algo is None or args.env is None:
        raise ValueError("train needs ALGO and ENV (or --out-dir DIR --resume to continue a "
                         "run); 'spnpolicy --help' lists them")
    seed = 0 if args.seed is None else args.seed
    overrides = _overrides(args.algo, args.config)
    total_steps = args.total_steps
    if "total_steps" in overrides:
        if total_steps is not None and total_steps != overrides["total_steps"]:
            raise ValueError(f"--total-steps {total_steps} and --set total_steps="
                             f"{overrides['total_steps']} disagree; give one of them")
    if args.config_file is not None:
        overrides = _from_config_file(args, overrides) | overrides
    if total_steps is None:
        total_steps = overrides.get("total_steps")
    overrides.pop("total_steps", None)
    out_dir = args.out_dir
    if out_dir is None:
        env = args.env.replace("/", "-").replace(":", "-")
        out_dir = f"runs/{args.algo}_{env}_s{seed}_{time.strftime('%Y%m%d-%H%M%S')}"
    env_kwargs = dict((k, literal(v)) for k, v in args.env_kw) if args.env_kw else None
    if env_kwargs is None and not args.resume:
        env_kwargs = {}
    try:
        result = spnpolicy.train(args.algo, args.env, seed=seed, total_steps=total_steps,
                                 out_dir=out_dir, env_kwargs=env_kwargs, resume=args.resume,
                                 init_from=args.init_from,
                                 init_partial=args.init_partial, progress=args.progress,
                                 verbose=not args.quiet, **overrides)
    except KeyboardInterrupt:
        _interrupted(out_dir)
        return INTERRUPTED
    shown = ", ".join(f"{k} {result.eval[k]:.4g}" for k in ("return_mean", "success_rate")
                      if k in result.eval)
    print(f"final greedy evaluation at step {result.eval['step']:,d}: {shown}")
    print(f"run directory: {result.out_dir}")
    return 0


def _from_config_file(args: argparse.Namespace, given: dict[str, Any]) -> dict[str, Any]:
    """The values of ``--config FILE`` for ``args.algo``; ValueError naming the file and the
    key for an unknown key or a bad value. ``given`` (``--set``) overrides the file, so a
    new run is checked with both, and an error is laid on the file when its values alone
    fail too (a resumed run's values are checked against its saved config by train)."""
    path = args.config_file
    values = read_config_file(path, get_algorithm(args.algo).config_cls)
    if not args.resume:
        own = {key: value for key, value in values.items() if key not in given}
        try:
            make_config(args.algo, args.env, values | given)
        except ValueError as error:
            try:
                make_config(args.algo, args.env, own)
            except ValueError as own_error:
                raise ValueError(f"config file {path}: {own_error}") from None
            raise error from None
    return values


def _interrupted(out_dir: str) -> None:
    """Say where an interrupted run stands and how to continue it."""
    from spnpolicy.training.rundir import RunDir

    step = RunDir(out_dir).checkpoint_step()
    if step is None:
        print(f"\nspnpolicy: interrupted before the first checkpoint of {out_dir}; nothing "
              f"to resume, run the command again to start over", file=sys.stderr)
        return
    print(f"\nspnpolicy: interrupted; {out_dir} holds a checkpoint at step {step:,d}. "
          f"Continue with:\n  spnpolicy train --out-dir {shlex.quote(str(out_dir))} --resume",
          file=sys.stderr)


def _config(args: argparse.Namespace) -> int:
    from spnpolicy.envs.registry import check_env_name

    if args.env is not None and args.env_option is not None and args.env != args.env_option:
        raise ValueError(f"the env is given twice: {args.env!r} and --env {args.env_option!r}; "
                         f"give one of them")
    env = args.env if args.env is not None else args.env_option
    get_algorithm(args.algo)
    if env is not None:
        check_env_name(env)
    cfg = make_config(args.algo, env)
    if args.out is not None:
        path = write_config_file(cfg, args.out)
        defaults = f"{env}'s defaults" if env is not None else "defaults for no env in particular"
        print(f"wrote the config of {args.algo} ({defaults}) to {path}; edit it and train with:"
              f"\n  spnpolicy train {args.algo} {env or 'ENV'} --config {shlex.quote(str(path))}")
        return 0
    docs = field_docs(type(cfg))
    fixed = get_algorithm(args.algo).fixed
    for f in dataclasses.fields(cfg):
        note = " (fixed by the algorithm)" if f.name in fixed else ""
        print(f"{f.name} = {getattr(cfg, f.name)!r}{note}\n    {docs.get(f.name, '')}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import torch

    check_int("--episodes", args.episodes, 1)
    check_int("--seed", args.seed, 0)
    torch.set_num_threads(1)
    text = json.dumps(evaluate_saved_run(args.run, args.episodes, args.seed, args.stochastic,
                                         args.acting), indent=2)
    print(text)
    if args.out is not None:
        out = Path(args.out)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text + "\n")
        except OSError as error:
            raise ValueError(f"--out {args.out}: cannot write it ({error.strerror})") from None
    return 0


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one ``spnpolicy: warning:`` line, without the source location."""
    print(f"spnpolicy: warning: {message}", file=sys.stderr if file is None else file)


def main(argv: Sequence[str] | None = None) -> int:
    warnings.showwarning = _show_warning
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.command_line = shlex.join(["spnpolicy", *argv])  # recorded by bench summaries
    try:
        return args.handler(args)
    except (ValueError, ImportError, RunBusyError) as error:
        message = " ".join(str(error).split()) or type(error).__name__
        parser.exit(2, f"spnpolicy: error: {message}\n")
    except KeyboardInterrupt:
        parser.exit(INTERRUPTED, "\nspnpolicy: interrupted\n")
    except BrokenPipeError:
        # the reader went away ('spnpolicy config ... | head'): stop quietly, and keep
        # Python's exit-time flush of stdout from raising again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
