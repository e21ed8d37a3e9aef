"""What spn-ac costs beside vdn at 16 and 64 agents, the figures of the many-agent cost target:
training env steps/s, their ratio, the growth of the cost per env step from 16 to 64 agents,
and peak memory, with the replay buffer as a short run leaves it and filled to capacity.

    python benchmarks/many_agents_cost.py --repeats 3        # 16 and 64 agents, ~6 min quiet
    python benchmarks/many_agents_cost.py --device cuda      # the same, networks on the GPU
    python benchmarks/many_agents_cost.py --quick --out /tmp/cost.json   # smoke test

Settings: the many-agent coverage suites' fixed-goal task and config (``coverage-16``,
``coverage-64``, ... in ``spnpolicy/bench/suites.py``: grid, horizon, observations,
shaping, spn-ac's critics on each agent's 2 nearest others with sibling pairs, the replay
capacity; ``--spn-ac factor_graph=random --spn-ac sibling_pairs=False`` for ``2 n`` random
pairs), each algorithm's other coverage defaults, and for both the same ``--num-envs``,
``--batch-size``, ``--gradient-steps``, ``update_every=1`` and ``--learning-starts``; eager
(no ``compile``), one torch thread, one evaluation episode at each end, no checkpoints.

Every run is a fresh Python process (so that peak memories do not mix), running
``spnpolicy.train`` for ``learning_starts + steps`` env steps:

- ``env_steps_per_s``: the training loop's rate after ``learning_starts``: env steps
  between the first and the last update round over the time between them (acting, env
  step, n-step/shaping, replay, updates, targets). CPU seconds of the process
  (``time.process_time``) on the CPU; synchronised wall seconds on CUDA. Neither the
  uniform warm-up nor the evaluations are in it. ``whole_run_env_steps_per_s``: the whole
  ``spnpolicy.train`` call, for reference. ``before_timed_s``: the same clock's seconds
  from the call's start to the first timed round (the warm-up, and with ``compile`` the
  compiling calls); on CUDA ``timed_window``, the timed rounds' first and last
  ``time.perf_counter`` stamps (one clock for every process of the machine: two runs in
  parallel processes did not share the GPU while timed when their windows do not overlap).
- ``peak_rss_mb``: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of the process at its end
  (the interpreter and torch included: ``rss_after_import_mb``); on CUDA also
  ``cuda_peak_allocated_mb``. ``buffer_mb``: the replay buffer's arrays at the end.
- ``full_buffer`` runs (``--full-agents``, default 64): before training, the buffer is
  filled to its capacity with rows of the same env under uniform random actions (pushed
  as one-step rows, the next states kept by reference as in training), then
  ``--full-steps`` env steps are trained after ``learning_starts``: the peak memory of a
  long run's steady state, without training that long.

Per team size: ``ratio_env_steps_per_s`` = spn-ac / vdn (target >= 0.5). Per algorithm:
``cost_growth`` = (cost per env step at the largest n) / (at the smallest), against
``linear_growth`` = the ratio of the team sizes (target: at most linear). With
``--repeats`` > 1 the algorithms alternate within each repeat and figures are medians.

Writes ``benchmarks/results/many-agents/cost_<commit>_<device>.json`` (or ``--out``) with
the commit, the device, the machine and the command. ``--quick``: tiny settings (2 envs,
batch 8, a few steps, horizon 8, a 64-row full buffer): checks that everything runs,
its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spnpolicy.bench.suites import Suite

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "many-agents"
ALGOS = ("spn-ac", "vdn")
_MARK = "MANY_AGENTS_COST_RESULT "
#: Update rounds left out of a compiled run's rate: those that compile.
COMPILE_ROUNDS = 3


def _rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


# --- one run, in its own process ----------------------------------------------------------
def child(spec: dict) -> dict:
    """One ``spnpolicy.train`` run as ``spec`` says; its figures."""
    rss_import = _rss_mb()
    import numpy as np
    import torch

    import spnpolicy
    from spnpolicy.training import Runner, make_vec_env, offpolicy

    rss_import = max(rss_import, _rss_mb())
    torch.set_num_threads(1)
    cuda = torch.device(spec["device"]).type == "cuda"

    def clock() -> float:
        if cuda:
            torch.cuda.synchronize()
            return time.perf_counter()
        return time.process_time()

    rounds: list[float] = []          # clock at each update round's first sample
    buffers: list = []
    fill: dict = {}
    gradient_steps = spec["config"]["gradient_steps"]

    class TimedBuffer(offpolicy.ReplayBuffer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            buffers.append(self)
            if spec["fill"]:
                start = time.perf_counter()
                fill["rows"] = _fill(self, spec, Runner, make_vec_env, np)
                fill["seconds"] = time.perf_counter() - start

        def sample(self, batch_size):
            self._samples = getattr(self, "_samples", 0) + 1
            if (self._samples - 1) % gradient_steps == 0:
                rounds.append(clock())
            return super().sample(batch_size)

    offpolicy.ReplayBuffer = TimedBuffer
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    total = spec["config"]["learning_starts"] + spec["steps"]
    start = clock()
    spnpolicy.train(spec["algo"], "coverage", seed=spec["seed"], total_steps=total,
                    env_kwargs=spec["env_kwargs"], progress=False, verbose=False,
                    **spec["config"])
    whole = clock() - start
    buffer, = buffers
    if len(rounds) < 2:
        raise RuntimeError(f"{len(rounds)} update rounds: give more steps after "
                           f"learning_starts")
    num_envs = spec["config"]["num_envs"]
    if spec["config"].get("compile"):      # the first rounds compile the update and acting
        rounds = rounds[COMPILE_ROUNDS:]
    out = {"env_steps_per_s": (len(rounds) - 1) * num_envs / (rounds[-1] - rounds[0]),
           "whole_run_env_steps_per_s": total / whole, "update_rounds": len(rounds),
           "before_timed_s": rounds[0] - start,
           "timed_env_steps": (len(rounds) - 1) * num_envs,
           "peak_rss_mb": _rss_mb(), "rss_after_import_mb": rss_import,
           "buffer_rows": len(buffer), "buffer_capacity": buffer.capacity,
           "buffer_mb": _buffer_bytes(buffer) / 2**20,
           "buffer_fields": sorted([*buffer.data, *buffer.next])}
    if fill:
        out |= {"fill_rows": fill["rows"], "fill_wall_s": fill["seconds"]}
    if cuda:
        out["cuda_peak_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["timed_window"] = [rounds[0], rounds[-1]]
    return out


def _fill(buffer, spec: dict, Runner, make_vec_env, np) -> int:
    """Fill ``buffer`` to its capacity with one-step rows of the run's env under uniform
    random actions (its own env copies and generator: the run's are untouched); the rows
    pushed."""
    num_envs = spec["config"]["num_envs"]
    envs = make_vec_env("coverage", num_envs, seed=spec["seed"] + 1, **spec["env_kwargs"])
    runner = Runner(envs, observations="obs" in buffer.data)
    runner.reset(seed=spec["seed"] + 1)
    rng = np.random.default_rng(spec["seed"] + 1)
    pushed = 0
    while len(buffer) < buffer.capacity:
        buffer.add(runner.step(rng.integers(0, envs.num_actions,
                                            (num_envs, envs.num_agents))))
        pushed += num_envs
    envs.close()
    return pushed


def _buffer_bytes(buffer) -> int:
    """Bytes of the buffer's row arrays and of its next-value stores."""
    total = sum(a.nbytes for a in buffer.data.values())
    for nxt in buffer.next.values():
        total += nxt.extra.nbytes + nxt.ref.nbytes + nxt.slot.nbytes + nxt._hash.nbytes
    return total


def run_child(spec: dict) -> dict:
    """``child(spec)`` in a fresh Python process; its figures."""
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child",
                           json.dumps(spec)], capture_output=True, text=True, cwd=ROOT,
                          env=os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    lines = [line for line in proc.stdout.splitlines() if line.startswith(_MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"run {spec['algo']} at {spec['env_kwargs']['num_agents']} agents "
                           f"failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len(_MARK):])


# --- the benchmark -----------------------------------------------------------------------
def settings(num_agents: int, quick: bool) -> tuple[dict, Suite]:
    """The ``coverage-<n>`` suite's fixed-goal task (env kwargs), and the suite."""
    from spnpolicy.bench.suites import get_suite

    suite = get_suite(f"coverage-{num_agents}")
    task = next(t for t in suite.tasks if t.name.endswith("-fixed"))
    env_kwargs = dict(task.env_kwargs)
    if quick:
        env_kwargs["max_steps"] = 8
    return env_kwargs, suite


def spec_of(algo: str, num_agents: int, args, full: bool) -> dict:
    from spnpolicy.bench.runner import suite_config

    env_kwargs, suite = settings(num_agents, args.quick)
    config = suite_config(suite, algo) | {
        "num_envs": args.num_envs, "batch_size": args.batch_size,
        "gradient_steps": args.gradient_steps, "update_every": 1,
        "learning_starts": args.learning_starts, "eval_episodes": 1,
        "eval_interval": 10**9, "checkpoint_interval": 10**9, "eval_stochastic": False,
        "torch_threads": 1, "device": args.device}
    if algo == "spn-ac":
        config |= args.spn_ac
    if full and args.quick:
        config["buffer_size"] = 64
    return {"algo": algo, "env_kwargs": env_kwargs, "config": config, "seed": 0,
            "steps": args.full_steps if full else args.steps, "device": args.device,
            "fill": full}


def _median(runs: list[dict]) -> dict:
    """Numbers: the median over repeats (and every repeat's value); the rest as is."""
    out = {}
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = statistics.median(r[key] for r in runs)
            if len(runs) > 1:
                out[f"{key}_repeats"] = [r[key] for r in runs]
        else:
            out[key] = value
    return out


def _device_name(device: str) -> str:
    import torch

    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    from spnpolicy.machine import cpu_model
    return cpu_model()


def _setting(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` -> ``(key, value)``, the value a Python literal (else the string)."""
    import ast

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[16, 64],
                        help="team sizes: the coverage-<n> suites (16, 32, 64)")
    parser.add_argument("--algos", nargs="+", default=list(ALGOS), choices=list(ALGOS))
    parser.add_argument("--steps", type=int, default=3000,
                        help="env steps trained after learning_starts per timed run")
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--gradient-steps", type=int, default=1)
    parser.add_argument("--learning-starts", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--full-agents", type=int, nargs="*", default=[64],
                        help="team sizes also run with the buffer filled to capacity")
    parser.add_argument("--full-steps", type=int, default=800,
                        help="env steps trained after learning_starts in a full-buffer run")
    parser.add_argument("--device", default="auto",
                        help="cpu, cuda, or auto (cuda when present; the default)")
    parser.add_argument("--spn-ac", type=_setting, action="append", default=[],
                        metavar="KEY=VALUE",
                        help="a config field of spn-ac's runs (repeatable; a Python literal, "
                             "e.g. width=8 or compile=True): a variant beside the same vdn")
    parser.add_argument("--quick", action="store_true",
                        help="tiny settings: a smoke test, figures meaningless")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: benchmarks/results/many-agents/cost_<commit>_<device>.json")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.spn_ac = dict(args.spn_ac)
    if args.child is not None:
        print(_MARK + json.dumps(child(json.loads(args.child))), flush=True)
        return {}
    import torch

    from spnpolicy.machine import git_commit, machine

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available on this machine")
    if args.quick:
        args.num_envs, args.batch_size, args.learning_starts = 2, 8, 16
        args.steps = args.full_steps = 16
    command = shlex.join(["python", "benchmarks/many_agents_cost.py",
                          *(sys.argv[1:] if argv is None else argv)])
    rows = []
    for n in args.agents:
        runs = {algo: [] for algo in args.algos}
        for _ in range(args.repeats):
            for algo in args.algos:
                runs[algo].append(run_child(spec_of(algo, n, args, full=False)))
                print(f"{n} agents, {algo}: {runs[algo][-1]['env_steps_per_s']:.1f} env "
                      f"steps/s, peak RSS {runs[algo][-1]['peak_rss_mb']:.0f} MB", flush=True)
        env_kwargs, suite = settings(n, args.quick)
        row = {"num_agents": n, "suite": suite.name, "env_kwargs": env_kwargs,
               "suite_config": dict(suite.config), "suite_algo_config": suite.algo_config}
        row |= {algo: _median(r) for algo, r in runs.items()}
        if n in args.full_agents:
            for algo in args.algos:
                full = run_child(spec_of(algo, n, args, full=True))
                row[algo]["full_buffer"] = full
                print(f"{n} agents, {algo}, buffer full ({full['buffer_capacity']:,} rows): "
                      f"peak RSS {full['peak_rss_mb']:.0f} MB", flush=True)
        if set(ALGOS) <= set(args.algos):
            row["ratio_env_steps_per_s"] = (row["spn-ac"]["env_steps_per_s"]
                                            / row["vdn"]["env_steps_per_s"])
            if args.repeats > 1:           # within each repeat: the two ran back to back
                row["ratio_env_steps_per_s_paired"] = statistics.median(
                    a["env_steps_per_s"] / b["env_steps_per_s"]
                    for a, b in zip(runs["spn-ac"], runs["vdn"]))
            print(f"{n} agents: spn-ac / vdn env steps/s = {row['ratio_env_steps_per_s']:.2f}",
                  flush=True)
        rows.append(row)
    growth = {}
    if len(rows) > 1:
        small, large = rows[0], rows[-1]
        for algo in args.algos:
            growth[algo] = {"from_agents": small["num_agents"], "to_agents": large["num_agents"],
                            "cost_growth": small[algo]["env_steps_per_s"]
                            / large[algo]["env_steps_per_s"],
                            "linear_growth": large["num_agents"] / small["num_agents"]}
            print(f"{algo}: cost per env step x{growth[algo]['cost_growth']:.2f} from "
                  f"{small['num_agents']} to {large['num_agents']} agents (linear: "
                  f"x{growth[algo]['linear_growth']:.0f})", flush=True)
    commit = git_commit()
    result = {"benchmark": "many_agents_cost", "commit": commit, "command": command,
              "device": args.device, "device_name": _device_name(args.device),
              "clock": "process_time (CPU s)" if args.device == "cpu"
              else "synchronised wall s",
              "machine": machine(), "quick": args.quick,
              "compile": bool(args.spn_ac.get("compile", False)), "spn_ac_config": args.spn_ac,
              "torch_threads": 1, "num_envs": args.num_envs, "batch_size": args.batch_size,
              "gradient_steps": args.gradient_steps, "update_every": 1,
              "learning_starts": args.learning_starts, "steps": args.steps,
              "full_steps": args.full_steps, "repeats": args.repeats, "teams": rows,
              "growth": growth}
    out = args.out or RESULTS / (f"cost_{(commit or 'unknown').replace('+', '_')}_"
                                 f"{torch.device(args.device).type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}", flush=True)
    return result


if __name__ == "__main__":
    main()
