"""Query speed: top-down queries against the upward pass, sampling memory, validation time.

1. Per circuit and batch: ``log_prob`` forward, forward + backward (w.r.t. the parameters),
   and each top-down query with its backward: ``marginals``, ``scope_marginals`` (pairs of
   neighbouring variables), ``leave_one_out_log_prob``, and the conditional mode
   (``condition(evidence).mode``, half the variables observed; no backward). Ratios are
   to ``log_prob`` forward + backward, the targets being <= 3 for the first three.
   Circuits: selective policies with one parameter set per row (what spn-ac evaluates)
   and a RAT-SPN with shared parameters. Every query is timed on the engine's routes (the
   flat layout, which answers every circuit: :func:`engine`); on circuits whose plan has
   the region-tree layout (selective) ``marginals`` and ``scope_marginals`` are timed again
   on ``circuit.distribution(params)``, which answers them on the tree (what spn-ac's
   policy trains on), under the same names with `` (region tree)`` appended.
2. ``sample(20000)`` on a ~287k-edge RAT-SPN: peak resident memory of a child process
   that builds the circuit and samples, minus that of one that only builds it.
3. Building and validating ``selective(16, 6, 64)`` and ``selective(500, 6, 8)``: the
   structural analysis (incl. the determinism check) and the whole ``Circuit(...)``.
4. ``--sections layouts``: on spn-ac's shapes (``selective(n, 6, 16)``, n = 3, 6, 8, 16,
   batch 128 and 256, one parameter set per row, the pairs of spn-ac's default critic
   graph), each query the region-tree layout answers, by the engine's route and by the
   tree's, in-process A/B: the two alternate (which goes first alternates too), each round
   builds its distribution from the logits as the policy does, medians of CPU times.

CPU time of this process (one thread by default), minimum of repeats after a warm-up, the
queries of one circuit running in turns; on an accelerator (``--device cuda``) synchronised wall time. Run from the repository root::

    .venv/bin/python benchmarks/queries.py --out benchmarks/results/queries.json
    .venv/bin/python benchmarks/queries.py --sections queries --budget 0.1 --out /tmp/q.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from circuits import Circuit, CircuitDistribution, passes
from circuits import structures
from circuits.analysis import analyse
from circuits.structures import random_tensorized, selective
from spnpolicy.algos.critics import build_factor_graph
from spnpolicy.machine import git_commit, machine

CONFIGS = [  # (name, builder kwargs, batch, per-row params)
    ("selective(8, 6, 8)", ("selective", dict(num_vars=8, num_states=6, width=8)), 128, True),
    ("selective(64, 6, 8)", ("selective", dict(num_vars=64, num_states=6, width=8)), 256, True),
    ("rat(32 x 6, ~19k edges)", ("rat", dict(num_vars=32, num_states=6, depth=3, num_repetitions=4,
                                             num_sums=8, num_input_distributions=8, seed=0)), 1000, False),
]
RAT_LARGE = dict(num_vars=32, num_states=6, depth=3, num_repetitions=4, num_sums=21,
                 num_input_distributions=21, seed=0)
SAMPLES = 20_000
VALIDATE = [(16, 6, 64), (500, 6, 8)]


def engine(circuit: Circuit, params: torch.Tensor) -> CircuitDistribution:
    """The engine's routes on ``circuit`` for logits ``params [B, P]`` (or ``[P]``),
    whatever the plan's layout (``circuit.distribution`` answers by the layout)."""
    flat = params.reshape(-1, params.shape[-1])
    ext = passes.normalise(circuit._plan_on(params.device), flat, extended=True)
    return CircuitDistribution(circuit, ext, params.shape[:-1])


def build(kind: str, kwargs: dict) -> Circuit:
    return selective(**kwargs) if kind == "selective" else random_tensorized(**kwargs)


def timer(device: torch.device, budget: float):
    """``measure({name: fn})`` -> ``{name: best seconds}``: the functions run in turns (one
    call each per round) until ``budget`` seconds are spent, so that a change in the
    machine's load hits every function alike and the ratios stay fair."""
    def once(fn) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            return time.perf_counter() - start
        start = time.process_time()
        fn()
        return time.process_time() - start

    def measure(fns: dict) -> dict:
        for fn in fns.values():
            fn()
        best = {name: float("inf") for name in fns}
        spent, rounds = 0.0, 0
        while rounds < 3 or (spent < budget * len(fns) and rounds < 50):
            for name, fn in fns.items():
                took = once(fn)
                best[name] = min(best[name], took)
                spent += took
            rounds += 1
        return best
    return measure


def bench_queries(name: str, spec, batch: int, per_row: bool, device: torch.device, budget: float) -> dict:
    circuit = build(*spec).to(device)
    g = torch.Generator(device=device).manual_seed(0)
    rows = batch if per_row else 1
    params = torch.randn(rows, circuit.num_params, generator=g, device=device).requires_grad_()

    def dist():
        return engine(circuit, params if per_row else params[0])

    tree = type(circuit.distribution(params)) is not CircuitDistribution

    x = dist().sample((batch,) if not per_row else (), generator=g)
    pairs = [(i, i + 1) for i in range(circuit.num_vars - 1)]
    evidence = x.clone()
    evidence[..., 1::2] = -1
    if not per_row:
        evidence = evidence[0]
    measure = timer(device, budget)

    def backward(out):
        params.grad = None
        out.sum().backward()

    def no_grad(fn):
        def run():
            with torch.no_grad():
                fn()
        return run

    queries = {
        "log_prob": no_grad(lambda: dist().log_prob(x)),
        "log_prob+backward": lambda: backward(dist().log_prob(x)),
        "marginals+backward": lambda: backward(dist().marginals()),
        "scope_marginals+backward": lambda: backward(dist().scope_marginals(pairs)),
        "leave_one_out+backward": lambda: backward(dist().leave_one_out_log_prob(x)),
        "condition+mode": no_grad(lambda: dist().condition(evidence).mode),
    }
    if tree:
        queries["marginals+backward (region tree)"] = \
            lambda: backward(circuit.distribution(params).marginals())
        queries["scope_marginals+backward (region tree)"] = \
            lambda: backward(circuit.distribution(params).scope_marginals(pairs))
    times = measure(queries)
    base = times["log_prob+backward"]
    return {"circuit": name, "edges": circuit.num_edges, "batch": batch,
            "params": "one set per row" if per_row else "shared", "region_tree": tree,
            "ms": {k: round(v * 1e3, 3) for k, v in times.items()},
            "ratio_to_log_prob_backward": {k: round(v / base, 2) for k, v in times.items()
                                           if k not in ("log_prob", "log_prob+backward")}}


_CHILD = """
import resource, sys, torch
torch.set_num_threads(1)
from circuits.structures import random_tensorized
c = random_tensorized(**{kwargs!r}).to({device!r})
if {sample}:
    x = c.sample({samples}, generator=torch.Generator({device!r}).manual_seed(0))
    assert x.shape == ({samples}, c.num_vars)
print(c.num_edges, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def bench_sample_memory(device: str) -> dict:
    """Peak RSS (MiB) of a child that builds the large RAT-SPN and samples, minus one that
    only builds it (CPU memory; on CUDA the samples' device memory is not included)."""
    peaks = {}
    for sample in (False, True):
        code = _CHILD.format(kwargs=RAT_LARGE, device=device, sample=sample, samples=SAMPLES)
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                             env=dict(os.environ, OMP_NUM_THREADS="1"))
        edges, kib = map(int, out.stdout.split())
        peaks[sample] = (kib / 1024, time.perf_counter() - start)
    return {"edges": edges, "samples": SAMPLES, "peak_rss_build_only_mib": round(peaks[False][0], 1),
            "peak_rss_with_sampling_mib": round(peaks[True][0], 1),
            "sampling_extra_mib": round(peaks[True][0] - peaks[False][0], 1),
            "wall_s_with_sampling": round(peaks[True][1], 2)}


def _selective_nodes(*args) -> object:
    """The root node that ``selective(*args)`` would compile (its ``Circuit`` step skipped)."""
    saved = structures.Circuit
    structures.Circuit = lambda node: node
    try:
        return structures.selective(*args)
    finally:
        structures.Circuit = saved


def bench_validation() -> list[dict]:
    rows = []
    for args in VALIDATE:
        nodes_start = time.process_time()
        root = _selective_nodes(*args)
        nodes_s = time.process_time() - nodes_start
        start = time.process_time()
        structure = analyse(root)
        analyse_s = time.process_time() - start
        start = time.process_time()
        circuit = Circuit(root)
        circuit_s = time.process_time() - start
        rows.append({"builder": f"selective{args}", "edges": circuit.num_edges,
                     "deterministic": structure.is_deterministic, "nodes_s": round(nodes_s, 3),
                     "analyse_s": round(analyse_s, 3), "circuit_s": round(circuit_s, 3),
                     "built_and_validated_s": round(nodes_s + circuit_s, 3)})
    return rows


LAYOUT_SIZES, LAYOUT_BATCHES, LAYOUT_ROUNDS = (3, 6, 8, 16), (128, 256), 60


def bench_layouts(device: torch.device, rounds: int = LAYOUT_ROUNDS) -> list[dict]:
    """Per spn-ac shape and query: ms by the engine's route and by the tree's (medians of
    ``rounds`` alternating pairs of calls) and their ratio (> 1: the tree is faster)."""
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    rows = []
    for n in LAYOUT_SIZES:
        circuit = selective(n, 6, 16).to(device)
        scopes = [tuple(f) for f in build_factor_graph("auto", n, 20, 2, 0).factors]
        for batch in LAYOUT_BATCHES:
            g = torch.Generator(device=device).manual_seed(n * batch)
            params = (0.5 * torch.randn(batch, circuit.num_params, generator=g,
                                        device=device)).requires_grad_()
            x = engine(circuit, params.detach()).sample(generator=g)
            routes = {"engine": lambda: engine(circuit, params),
                      "tree": lambda: circuit.distribution(params)}
            for query, fn in _layout_queries(scopes, x, params).items():
                times = {name: [] for name in routes}
                for name in routes:
                    fn(routes[name])                                  # warm-up
                for r in range(rounds):
                    for name in (("engine", "tree") if r % 2 == 0 else ("tree", "engine")):
                        if device.type == "cuda":
                            torch.cuda.synchronize()
                        start = clock()
                        fn(routes[name])
                        if device.type == "cuda":
                            torch.cuda.synchronize()
                        times[name].append(clock() - start)
                ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
                row = {"n": n, "batch": batch, "query": query, "engine_ms": round(ms["engine"], 3),
                       "tree_ms": round(ms["tree"], 3),
                       "engine_over_tree": round(ms["engine"] / ms["tree"], 2)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def _layout_queries(scopes: list, x: torch.Tensor, params: torch.Tensor) -> dict:
    """spn-ac's calls: ``make()`` builds the distribution from the logits."""
    def backward(out):
        params.grad = None
        out.sum().backward()

    def actor(make):          # the actor loss's queries (exact ELBO, mode guidance), backward
        d = make()
        backward(d.entropy() + d.marginals().sum((1, 2)) + d.scope_marginals(scopes).sum((1, 2, 3))
                 + d.log_prob(x))

    def soft_value(make):     # the critic target's queries, no gradient
        with torch.no_grad():
            d = make()
            return d.entropy(), d.marginals(), d.scope_marginals(scopes)

    def acting(query):
        def run(make):
            with torch.inference_mode():
                d = make()
                return d.sample() if query == "sample" else d.mode
        return run

    return {"actor loss (H, marginals, pairs, log_prob) + backward": actor,
            "soft value (H, marginals, pairs), no grad": soft_value,
            "entropy + backward": lambda make: backward(make().entropy()),
            "marginals + backward": lambda make: backward(make().marginals()),
            "pair tables + backward": lambda make: backward(make().scope_marginals(scopes)),
            "log_prob + backward": lambda make: backward(make().log_prob(x)),
            "sample (inference mode)": acting("sample"), "mode (inference mode)": acting("mode")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON results file (the tracked one: benchmarks/results/queries.json); "
                             "default: print only")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of timing per measurement")
    parser.add_argument("--sections", nargs="+", default=["queries", "sample", "validation"],
                        choices=["queries", "sample", "validation", "layouts"])
    parser.add_argument("--rounds", type=int, default=LAYOUT_ROUNDS,
                        help="layouts: alternating pairs of calls per query")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    result = {"machine": machine(command=" ".join([Path(sys.executable).name, *sys.argv]),
                                 git_commit=git_commit("circuits"), threads=args.threads),
              "device": str(device),
              "load_average_1min": {"start": os.getloadavg()[0]}}
    if "queries" in args.sections:
        result["queries"] = []
        for name, spec, batch, per_row in CONFIGS:
            row = bench_queries(name, spec, batch, per_row, device, args.budget)
            print(json.dumps(row))
            result["queries"].append(row)
    if "sample" in args.sections:
        result["sample_memory"] = bench_sample_memory(args.device)
        print(json.dumps(result["sample_memory"]))
    if "layouts" in args.sections:
        result["layouts"] = bench_layouts(device, args.rounds)
    if "validation" in args.sections:
        result["validation"] = bench_validation()
        print(json.dumps(result["validation"]))
    result["load_average_1min"]["end"] = os.getloadavg()[0]
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
