"""Training speed of spn-ac against vdn on coverage: env steps/s of the training loop and
milliseconds per update, at equal num_envs, batch_size and gradient_steps.

    python benchmarks/train_speed.py                       # both settings, 2 repeats
    python benchmarks/train_speed.py --settings 3x6x6 --steps 4000 --out /tmp/speed.json

Settings: ``3x6x6`` (3 agents, 6x6 grid; spn-ac's critic has the 3 pairwise factors) and
``6x20x20`` (6 agents, 20x20 grid; 20 random pairwise factors, spn-ac's default), coverage's
default observations and random goals; ``coverage-quick`` and ``coverage-paper``: the same
sizes in the env setting and config of those bench suites (the setting every coverage
result in ``benchmarks/README.md`` trains in: fixed goals, relative observations, 131
numbers per agent on 20x20 where the default has 37; shaping). Both algorithms run their
coverage defaults with the same ``num_envs``, ``batch_size``, ``gradient_steps`` and
``learning_starts`` (given below), one evaluation episode and no checkpoints, in this one
process on one torch thread. A figure is CPU seconds
(``time.process_time``), the median over ``--repeats``; the algorithms alternate within
each repeat so that both see the same machine load, and the ratio is taken in this run.

- ``env_steps_per_s``: ``total_steps`` / CPU seconds of ``spnpolicy.train`` (acting, env
  steps, replay and every update; the two evaluations of one episode are included).
  Each setting's ``ratio_env_steps_per_s`` is spn-ac's median over vdn's;
  ``ratio_env_steps_per_s_paired`` the median of the ratios within each repeat, where the
  two ran back to back (the figure that drift between repeats moves least); with
  ``--compile`` the same for spn-ac-compiled (``..._compiled`` and ``..._compiled_paired``).
- ``update_ms``: one ``update`` of each (vdn's ``QLearner.update``: loss, backward,
  clipping, its Adam) on a replayed batch of ``batch_size``, timed alone after a warm-up.

``--spn-ac-hidden 64,64`` gives spn-ac's policy and critics vdn's hidden widths, to see
how much of the gap is the networks' size (the targets are at each one's defaults).

``--compile`` adds ``spn-ac-compiled``, spn-ac with ``compile=True`` (its update and its
acting through torch.compile), alternating with the other two in every repeat. Its
``env_steps_per_s`` leaves out the first update and the first sampled action, the calls
that compile (``compile_s``, on the run's own clock: CPU seconds on the CPU, synchronised
wall seconds on an accelerator; beside it ``compile_cpu_s`` and ``compile_wall_s``:
inductor compiles in worker processes, whose CPU time is not the run's), a one-time cost
that long runs amortise;
``env_steps_per_s_with_compile`` keeps it. vdn's row then also has
``update_ms_compiled``: its own loss (``td_loss``) through the same ``maybe_compile``,
timed as its update is, to show whether compiling helps it too; and each setting's row
``compiled_over_eager_paired``: spn-ac's compiled update time over its eager one, the two
built in this process and alternating in blocks of 20 updates for ``--paired-rounds``
rounds (median and quartiles of the rounds' ratios), the figure this machine's drift
between runs cannot move.

Writes ``benchmarks/results/train_speed.json`` only with ``--out`` (or ``--save``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

import spnpolicy
from spnpolicy.algos.q_learning import QLearner, td_loss
from spnpolicy.algos.registry import make_config
from spnpolicy.algos.spn_ac import SpnAc
from spnpolicy.algos.value_based import build as build_vdn
from spnpolicy.bench.runner import config_fields
from spnpolicy.bench.suites import get_suite
from spnpolicy.machine import machine
from spnpolicy.training import (Batch, Polyak, ReplayBuffer, Runner, TransitionStream,
                                make_vec_env)
from spnpolicy.training.optim import gradient_step, maybe_compile

RESULTS = Path(__file__).resolve().parent / "results" / "train_speed.json"


def _suite_setting(name: str) -> tuple[dict, dict]:
    suite = get_suite(name)
    task, = suite.tasks
    return dict(task.env_kwargs), dict(suite.config)


#: name -> (coverage env kwargs, config fields set for every algorithm that has them)
SETTINGS = {
    "3x6x6": (dict(num_agents=3, grid_size=6, max_steps=50, reward="sparse"), {}),
    "6x20x20": (dict(num_agents=6, grid_size=20, max_steps=200, reward="sparse"), {}),
    "coverage-quick": _suite_setting("coverage-quick"),
    "coverage-paper": _suite_setting("coverage-paper"),
}
DEFAULT_SETTINGS = ("3x6x6", "6x20x20")
ALGOS = ("spn-ac", "vdn")
#: what each timed variant trains: (registered algorithm, config fields)
VARIANTS = {"spn-ac": ("spn-ac", {}), "spn-ac-compiled": ("spn-ac", {"compile": True}),
            "vdn": ("vdn", {})}


def run_config(variant: str, setting: dict, args) -> object:
    algo, extra = VARIANTS[variant]
    overrides = config_fields(algo, setting) | extra
    if algo == "spn-ac" and args.spn_ac_hidden is not None:
        overrides |= {"policy_hidden": args.spn_ac_hidden, "critic_hidden": args.spn_ac_hidden}
    return make_config(algo, "coverage", {
        "total_steps": args.steps, "num_envs": args.num_envs, "batch_size": args.batch_size,
        "gradient_steps": args.gradient_steps, "learning_starts": args.learning_starts,
        "eval_episodes": 1, "eval_interval": args.steps, "checkpoint_interval": args.steps,
        "eval_stochastic": False, "torch_threads": 1, "device": args.device, **overrides})


def train_rate(variant: str, env_kwargs: dict, setting: dict, args) -> dict[str, float]:
    """Env steps per CPU second of one ``spnpolicy.train`` run (``env_steps_per_s``); with
    spn-ac's ``compile``, without the update that compiles, whose cost is reported apart."""
    algo, extra = VARIANTS[variant]
    cfg = run_config(variant, setting, args)
    overrides = {f: getattr(cfg, f) for f in ("num_envs", "batch_size", "gradient_steps",
                                              "learning_starts", "eval_episodes",
                                              "eval_interval", "checkpoint_interval",
                                              "eval_stochastic", "torch_threads", "device")}
    overrides |= config_fields(algo, setting)
    if algo == "spn-ac" and args.spn_ac_hidden is not None:
        overrides.update(policy_hidden=cfg.policy_hidden, critic_hidden=cfg.critic_hidden)
    overrides |= extra
    compiling = extra.get("compile", False)
    clock = _clock(args.device)
    compile_times: list[tuple[float, float, float]] = []
    with _timing_compiles(compile_times, clock) if compiling else contextlib.nullcontext():
        start = clock()
        spnpolicy.train(algo, "coverage", seed=0, total_steps=args.steps,
                        env_kwargs=env_kwargs, progress=False, verbose=False, **overrides)
        seconds = clock() - start
    if not compiling:
        return {"env_steps_per_s": args.steps / seconds}
    compile_cpu, compile_wall, compile_s = (sum(t) for t in zip(*compile_times)) \
        if compile_times else (0.0, 0.0, 0.0)
    return {"env_steps_per_s": args.steps / (seconds - compile_s),
            "env_steps_per_s_with_compile": args.steps / seconds,
            "compile_s": compile_s, "compile_cpu_s": compile_cpu, "compile_wall_s": compile_wall}


@contextlib.contextmanager
def _timing_compiles(record: list[tuple[float, float, float]], clock=time.process_time):
    """Appends (CPU s, wall s, s on ``clock``) of each SpnAc's first update and first
    sampled action to ``record``: the calls that trace and compile its update and its
    acting; they also run that update or action, and once more eagerly as
    ``maybe_compile``'s warm-up, milliseconds of the seconds. ``clock`` is the run's own
    (:func:`_clock`), whose seconds the run's rate leaves out."""
    originals = {name: getattr(SpnAc, name) for name in ("update", "sample")}
    calls: dict[tuple[str, int], int] = {}

    def timed_first(name):
        original = originals[name]

        def call(self, *args):
            key = (name, id(self))
            calls[key] = calls.get(key, 0) + 1
            if calls[key] != 1:
                return original(self, *args)
            cpu, wall, on_clock = time.process_time(), time.perf_counter(), clock()
            result = original(self, *args)
            on_clock = clock() - on_clock
            record.append((time.process_time() - cpu, time.perf_counter() - wall, on_clock))
            return result
        return call

    for name in originals:
        setattr(SpnAc, name, timed_first(name))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(SpnAc, name, original)


def update_ms(variant: str, env_kwargs: dict, setting: dict, args, updates: int,
              compiled_loss: bool = False) -> float:
    """CPU milliseconds of one update on a replayed batch (vdn's loss compiled with
    ``compiled_loss``), after a warm-up of 10 updates (the first compiles)."""
    step, batches, close = _update_step(variant, env_kwargs, setting, args, updates,
                                        compiled_loss)
    for batch in batches[:10]:
        step(batch)
    clock = _clock(args.device)
    start = clock()
    for batch in batches:
        step(batch)
    seconds = clock() - start
    close()
    return seconds / updates * 1e3


def paired_compiled_over_eager(env_kwargs: dict, setting: dict, args, rounds: int,
                               block: int = 20) -> dict[str, float]:
    """spn-ac-compiled's update time over spn-ac's, both in this process, alternating
    blocks of ``block`` updates for ``rounds`` rounds (the ratio of each round's pair;
    the machine's drift between runs then cancels): median and quartiles."""
    eager, batches, close_eager = _update_step("spn-ac", env_kwargs, setting, args, block)
    compiled, _, close_compiled = _update_step("spn-ac-compiled", env_kwargs, setting, args,
                                               block)
    clock = _clock(args.device)

    def timed(step) -> float:
        start = clock()
        for batch in batches:
            step(batch)
        return clock() - start

    timed(eager), timed(compiled)                   # warm-up; the compiled one compiles
    ratios = sorted(timed(compiled) / timed(eager) for _ in range(rounds))
    close_eager(), close_compiled()
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return {"median": statistics.median(ratios), "q1": quartiles[0], "q3": quartiles[2],
            "rounds": rounds, "block": block}


def _update_step(variant: str, env_kwargs: dict, setting: dict, args, updates: int,
                 compiled_loss: bool = False):
    """``(step, batches, close)``: one update of ``variant`` as training runs it, ``updates``
    replayed batches of ``batch_size`` and the envs' close."""
    torch.manual_seed(0)
    algo = VARIANTS[variant][0]
    cfg = run_config(variant, setting, args)
    envs = make_vec_env("coverage", cfg.num_envs, seed=0, **env_kwargs)
    needs_obs = algo != "spn-ac"
    device = torch.device(cfg.device)
    buffer = ReplayBuffer(1000, envs.state_dim, envs.num_agents,
                          obs_dim=envs.obs_dim if needs_obs else None, seed=0, device=device)
    gen = torch.Generator().manual_seed(0)
    runner, stream = Runner(envs), TransitionStream(envs, 1, cfg.gamma, False, seed=0)
    runner.reset(seed=0)
    for _ in range(1000 // cfg.num_envs + 1):
        actions = torch.randint(envs.num_actions, (cfg.num_envs, envs.num_agents),
                                generator=gen).numpy()
        buffer.add(stream.push(runner.step(actions)))
    # each algorithm's own update (its optimisers: training.optim.adam, and clipping)
    if algo == "spn-ac":
        algorithm = SpnAc(cfg, envs)
        polyak = [Polyak(target, online) for target, online in algorithm.target_sync.pairs]

        def step(batch):
            algorithm.update(batch)
            for pair in polyak:      # as the training loop does
                pair(cfg.tau)
    elif compiled_loss:
        learner = QLearner(cfg, envs, build_vdn)

        def loss(*fields):
            return td_loss(learner.agent, learner.target, Batch(*fields), cfg)[0]
        loss = maybe_compile(loss, True, "vdn's TD loss")

        def step(batch):        # QLearner.update with its loss compiled
            if learner.rewards is not None:
                learner.rewards.update(batch.reward)
                batch = batch._replace(reward=learner.rewards.standardise(batch.reward))
            gradient_step(learner.optimizer, loss(*batch), cfg.max_grad_norm)
    else:
        step = QLearner(cfg, envs, build_vdn).update
    return step, [buffer.sample(cfg.batch_size) for _ in range(updates)], envs.close


def _paired_ratio(ours: list[dict], theirs: list[dict]) -> dict:
    """The ratio of env steps/s within each repeat (the two ran in it back to back, so the
    machine's drift between repeats cancels): their median and the repeats' ratios."""
    ratios = [a["env_steps_per_s"] / b["env_steps_per_s"] for a, b in zip(ours, theirs)]
    return {"median": statistics.median(ratios), "repeats": ratios}


def _clock(device: str):
    """CPU seconds on the CPU; on an accelerator synchronised wall seconds."""
    if torch.device(device).type != "cuda":
        return time.process_time

    def wall() -> float:
        torch.cuda.synchronize()
        return time.perf_counter()
    return wall


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        widths = ()
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"expected positive widths like 64,64, got {text!r}")
    return widths


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=list(DEFAULT_SETTINGS),
                        choices=list(SETTINGS),
                        help="default: the two target settings; coverage-quick and "
                             "coverage-paper are the bench suites' own")
    parser.add_argument("--steps", type=int, default=8000, help="env steps per training run")
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--gradient-steps", type=int, default=1)
    parser.add_argument("--learning-starts", type=int, default=256)
    parser.add_argument("--updates", type=int, default=200, help="updates timed for update_ms")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu",
                        help="torch device of both algorithms' networks and updates (cpu, "
                             "cuda); on an accelerator the figures are synchronised wall time")
    parser.add_argument("--spn-ac-hidden", type=_widths, default=None, metavar="W,W",
                        help="spn-ac's policy and critic hidden widths (default: its own, "
                             "128,128; vdn's agent network is 64,64)")
    parser.add_argument("--compile", action="store_true",
                        help="also time spn-ac-compiled, spn-ac with compile=True (its env "
                             "steps/s without the one-time compile, reported apart), and "
                             "vdn's update with its loss compiled")
    parser.add_argument("--paired-rounds", type=int, default=30,
                        help="with --compile: rounds of the in-process A/B of spn-ac's "
                             "compiled and eager updates (blocks of 20 updates; 0: none)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the figures here (default: print only)")
    parser.add_argument("--save", action="store_true", help=f"write them to {RESULTS}")
    args = parser.parse_args(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available on this machine")
    torch.set_num_threads(1)
    rows = []
    for name in args.settings:
        env_kwargs, setting = SETTINGS[name]
        variants = ALGOS + (("spn-ac-compiled",) if args.compile else ())
        rates = {a: [] for a in variants}
        updates = {a: [] for a in variants}
        compiled_vdn = []
        for _ in range(args.repeats):
            for variant in variants:
                updates[variant].append(update_ms(variant, env_kwargs, setting, args,
                                                  args.updates))
                rates[variant].append(train_rate(variant, env_kwargs, setting, args))
            if args.compile:
                compiled_vdn.append(update_ms("vdn", env_kwargs, setting, args, args.updates,
                                              compiled_loss=True))
        row = {"setting": name, "env_kwargs": env_kwargs, "config": setting}
        for variant in variants:
            row[variant] = {key: statistics.median(r[key] for r in rates[variant])
                            for key in rates[variant][0]}
            row[variant] |= {"update_ms": statistics.median(updates[variant]),
                             "env_steps_per_s_repeats": [r["env_steps_per_s"]
                                                         for r in rates[variant]],
                             "update_ms_repeats": updates[variant]}
        row["ratio_env_steps_per_s"] = (row["spn-ac"]["env_steps_per_s"]
                                        / row["vdn"]["env_steps_per_s"])
        row["ratio_env_steps_per_s_paired"] = _paired_ratio(rates["spn-ac"], rates["vdn"])
        row["ratio_update_ms"] = row["spn-ac"]["update_ms"] / row["vdn"]["update_ms"]
        line = (f"{name}: spn-ac {row['spn-ac']['env_steps_per_s']:.0f} env steps/s, "
                f"{row['spn-ac']['update_ms']:.2f} ms/update; vdn "
                f"{row['vdn']['env_steps_per_s']:.0f} env steps/s, "
                f"{row['vdn']['update_ms']:.2f} ms/update; ratio of env steps/s "
                f"{row['ratio_env_steps_per_s']:.2f} (per repeat: "
                f"{row['ratio_env_steps_per_s_paired']['median']:.2f})")
        if args.compile:
            compiled = row["spn-ac-compiled"]
            row["vdn"] |= {"update_ms_compiled": statistics.median(compiled_vdn),
                           "update_ms_compiled_repeats": compiled_vdn}
            row["ratio_env_steps_per_s_compiled"] = (compiled["env_steps_per_s"]
                                                     / row["vdn"]["env_steps_per_s"])
            row["ratio_env_steps_per_s_compiled_paired"] = _paired_ratio(
                rates["spn-ac-compiled"], rates["vdn"])
            # paired within each repeat: the two ran back to back
            row["compiled_over_eager_update_ms"] = statistics.median(
                c / e for c, e in zip(updates["spn-ac-compiled"], updates["spn-ac"]))
            paired = ""
            if args.paired_rounds:
                row["compiled_over_eager_paired"] = paired_compiled_over_eager(
                    env_kwargs, setting, args, args.paired_rounds)
                paired = (f"; over eager's update, paired in process "
                          f"{row['compiled_over_eager_paired']['median']:.2f}")
            line += (f"; spn-ac-compiled {compiled['env_steps_per_s']:.0f} env steps/s, "
                     f"{compiled['update_ms']:.2f} ms/update (compiled in "
                     f"{compiled['compile_cpu_s']:.1f} CPU s, {compiled['compile_wall_s']:.1f} "
                     f"s wall{paired}), ratio "
                     f"{row['ratio_env_steps_per_s_compiled']:.2f} (per repeat: "
                     f"{row['ratio_env_steps_per_s_compiled_paired']['median']:.2f}); vdn's "
                     f"update with its loss compiled {row['vdn']['update_ms_compiled']:.2f} ms")
        rows.append(row)
        print(line, flush=True)
    result = {"benchmark": "train_speed", "command": shlex.join([sys.argv[0], *(argv or sys.argv[1:])]),
              "machine": machine(), "num_envs": args.num_envs, "batch_size": args.batch_size,
              "gradient_steps": args.gradient_steps, "learning_starts": args.learning_starts,
              "steps": args.steps, "repeats": args.repeats, "device": args.device,
              "clock": "process_time (CPU)" if args.device == "cpu" else "synchronised wall",
              "spn_ac_hidden": list(args.spn_ac_hidden or ()) or "default",
              "spn_ac_compile": args.compile,
              "torch_threads": 1, "settings": rows}
    out = args.out or (RESULTS if args.save else None)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
