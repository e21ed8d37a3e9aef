"""The ``spnpolicy`` command line.

```
spnpolicy train spn-ac climbing --seed 0
spnpolicy train spn-ac coverage --env-kw num_agents=3 --env-kw grid_size=6 \\
    --set total_steps=100000 --out-dir runs/cov3
spnpolicy train spn-ac coverage --out-dir runs/cov3 --resume ...   # same arguments
spnpolicy config spn-ac climbing          # every config field, its value and meaning
spnpolicy bench matrix --workers 2        # a benchmark suite: runs, table, plots
spnpolicy plot runs/bench/matrix          # redraw a benchmark's table and plots
spnpolicy query runs/cov3 --fix 2=noop    # a trained policy given agent 2's noop
```

A run directory holds ``config.json``, ``metrics.jsonl`` / ``metrics.csv`` (one line per
evaluation) and ``checkpoints/last.pt``; progress goes to stderr, evaluations to stdout.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import shlex
import sys
import time
from collections.abc import Sequence
from typing import Any

from spnpolicy.algos.config import field_docs, parse_field_value
from spnpolicy.algos.registry import ALGORITHMS, get_algorithm, make_config
from spnpolicy.envs.registry import ENV_NAMES, LBF_EXAMPLE

__all__ = ["build_parser", "main"]


def _listing() -> str:
    width = max(map(len, ALGORITHMS))
    algos = "\n".join(f"  {name:<{width}}  {spec.summary}" for name, spec in ALGORITHMS.items())
    envs = "\n".join(f"  {name}" for name in ENV_NAMES)
    return (f"algorithms:\n{algos}\n\nenvironments:\n{envs}\n  lbf/<lbforaging id>, e.g. "
            f"{LBF_EXAMPLE}\n\n'spnpolicy config ALGO ENV' lists an algorithm's config keys.")


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def _literal(text: str) -> Any:
    """An env argument: a Python literal (3, 0.5, (1, 2), None, True) or else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spnpolicy", description="Train and evaluate tractable joint policies for "
        "cooperative multi-agent RL.", epilog=_listing(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = commands.add_parser(
        "train", help="train an algorithm on an environment", epilog=_listing(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train ALGO on ENV, evaluating greedily at fixed intervals; writes a run "
        "directory (config.json, metrics.jsonl, metrics.csv, checkpoints/last.pt).")
    train.add_argument("algo", metavar="ALGO", help="algorithm name (listed below)")
    train.add_argument("env", metavar="ENV", help="environment name (listed below)")
    train.add_argument("--seed", type=int, default=0, help="run seed (default 0)")
    train.add_argument("--total-steps", type=int, default=None,
                       help="env-step budget (default: the algorithm's default for ENV)")
    train.add_argument("--out-dir", default=None,
                       help="run directory (default runs/ALGO_ENV_sSEED_TIMESTAMP)")
    train.add_argument("--env-kw", type=_key_value, action="append", default=[],
                       metavar="KEY=VALUE", help="environment argument (repeatable), "
                       "value as a Python literal, e.g. num_agents=3 reward=sparse")
    train.add_argument("--set", type=_key_value, action="append", default=[], dest="config",
                       metavar="KEY=VALUE", help="config override (repeatable), e.g. "
                       "actor_lr=1e-3 policy_hidden=64,64; see 'spnpolicy config'")
    train.add_argument("--resume", action="store_true",
                       help="continue from OUT_DIR's last checkpoint if it has one")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.add_argument("--quiet", action="store_true", help="no line per evaluation")

    train.set_defaults(handler=_train)

    config = commands.add_parser("config", help="show an algorithm's config for an env")
    config.add_argument("algo", metavar="ALGO")
    config.add_argument("env", metavar="ENV")
    config.set_defaults(handler=_config)

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


def _train(args: argparse.Namespace) -> int:
    import spnpolicy

    overrides = _overrides(args.algo, args.config)
    out_dir = args.out_dir
    if args.resume and out_dir is None:
        raise ValueError("--resume needs the --out-dir of the run to resume")
    if out_dir is None:
        env = args.env.replace("/", "-")
        out_dir = f"runs/{args.algo}_{env}_s{args.seed}_{time.strftime('%Y%m%d-%H%M%S')}"
    result = spnpolicy.train(args.algo, args.env, seed=args.seed, total_steps=args.total_steps,
                             out_dir=out_dir, env_kwargs=dict((k, _literal(v)) for k, v in
                                                               args.env_kw),
                             resume=args.resume, progress=not args.no_progress,
                             verbose=not args.quiet, **overrides)
    shown = ", ".join(f"{k} {result.eval[k]:.4g}" for k in ("return_mean", "success_rate")
                      if k in result.eval)
    print(f"final greedy evaluation at step {result.eval['step']:,d}: {shown}")
    print(f"run directory: {result.out_dir}")
    return 0


def _config(args: argparse.Namespace) -> int:
    from spnpolicy.api import check_env_name

    get_algorithm(args.algo)
    check_env_name(args.env)
    cfg = make_config(args.algo, args.env)
    docs = field_docs(type(cfg))
    fixed = get_algorithm(args.algo).fixed
    for f in dataclasses.fields(cfg):
        note = " (fixed by the algorithm)" if f.name in fixed else ""
        print(f"{f.name} = {getattr(cfg, f.name)!r}{note}\n    {docs.get(f.name, '')}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.command_line = shlex.join(["spnpolicy", *argv])  # recorded by bench summaries
    try:
        return args.handler(args)
    except (ValueError, ImportError) as error:
        parser.exit(2, f"spnpolicy: error: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
