"""Cost of the exact ELBO and its gradient against the number of agents n.

The exact ELBO is spn-ac's actor objective (docs/design.md, sections 3-4). For each n: a batch of 256 states, k = 6 actions, the policy ``selective(n, 6, width=8)``
with parameters from a random ``[256, num_params]`` tensor that requires grad, and a
Q-function on ``FactorGraph.random(n, 2n, order=2)`` (all C(n, 2) pairs when 2n exceeds
that, i.e. n = 4) with random unary and pairwise tables. One timed call is
``elbo(values, dist).sum().backward()`` including ``dist = circuit.distribution(params)``
(a selective circuit's plan has the region-tree layout: its marginals, entropy and pair
tables come from ``circuits/tree_distribution.py``), what spn-ac's policy trains on.

Beside it, exact enumeration: a softmax policy over all k^n joint actions (logits
``[256, k^n]`` requiring grad), Q from ``FactorValues.table()``, ELBO
``sum_u p(u) (Q(u) - log p(u))`` and backward, for the n where 256 * k^n entries fit in
``--max-enum-entries``.

Each figure is the median over ``--repeats`` calls after two warm-up calls (the first
builds and caches the pair plan). Wall time and process CPU time are both
recorded; the machine may be shared, in which case the CPU time is the steadier figure.

``--interleaved R`` adds the ratio t(64) / t(8) measured the way the other speed ratios
are: the cases run in turns for ``R`` rounds and each keeps its minimum CPU time, so a
change of the machine's load hits them alike. It is taken for two factor graphs (the
random 2n pairs above, and the line of n - 1 neighbouring pairs, which split low in the
selective circuit's variable tree) and two routes of the same distribution: the region
tree's (``circuit.distribution(params)``), which spn-ac's policy uses, and the engine's
(the flat layout's scope tables, which answer every circuit).

Usage::

    python benchmarks/elbo_scaling.py           # writes runs/benchmarks/elbo_scaling.{json,png}
    python benchmarks/elbo_scaling.py --out benchmarks/results/elbo_scaling.json  # tracked
    python benchmarks/elbo_scaling.py --sizes 4 8 16 --repeats 3
    python benchmarks/elbo_scaling.py --sizes 8 64 --interleaved 7 --out /tmp/elbo.json
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from circuits import CircuitDistribution, passes
from circuits.structures import selective
from factor_q import FactorGraph, FactorValues, elbo
from spnpolicy.machine import machine

RESULTS = Path("runs/benchmarks")  # tracked copy: benchmarks/results/ (--out)


def synced(fn, device: torch.device):
    """``fn`` followed by a synchronisation on an accelerator (so its time is all of it)."""
    if device.type != "cuda":
        return fn

    def run():
        fn()
        torch.cuda.synchronize(device)
    return run


def time_call(fn, repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median wall and process-CPU milliseconds of ``fn()`` over ``repeats`` calls."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return {"wall_ms": 1e3 * statistics.median(wall), "cpu_ms": 1e3 * statistics.median(cpu)}


def random_values(n: int, k: int, batch: int, seed: int, graph: str = "random",
                  device: torch.device = torch.device("cpu")) -> FactorValues:
    """Random unary and pairwise tables on ``min(2n, C(n, 2))`` random pairwise factors
    (``graph="line"``: the ``n - 1`` pairs of neighbouring agents)."""
    graph = (FactorGraph.line(n) if graph == "line"
             else FactorGraph.random(n, min(2 * n, math.comb(n, 2)), order=2, seed=seed))
    gen = torch.Generator().manual_seed(seed)
    return FactorValues(graph, torch.randn(batch, n, k, generator=gen).to(device),
                        torch.randn(batch, graph.num_factors, k, k, generator=gen).to(device))


def engine(circuit, params: torch.Tensor) -> CircuitDistribution:
    """The engine's routes for ``params [B, P]`` whatever the plan's layout."""
    ext = passes.normalise(circuit._plan_on(params.device), params, extended=True)
    return CircuitDistribution(circuit, ext, params.shape[:1])


def circuit_case(n: int, k: int, width: int, batch: int, repeats: int, seed: int,
                 device: torch.device = torch.device("cpu")) -> dict:
    """Exact ELBO + backward through a selective circuit's region tree."""
    values = random_values(n, k, batch, seed, device=device)
    circuit = selective(n, k, width=width).to(device)
    gen = torch.Generator().manual_seed(seed)
    params = torch.randn(batch, circuit.num_params, generator=gen).to(device).requires_grad_(True)

    @functools.partial(synced, device=device)
    def step():
        params.grad = None
        elbo(values, circuit.distribution(params)).sum().backward()

    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    return {"factors": values.graph.num_factors, "num_params": circuit.num_params,
            "first_call_ms": 1e3 * first, **time_call(step, repeats)}


def enumeration_case(n: int, k: int, batch: int, repeats: int, seed: int,
                     device: torch.device = torch.device("cpu")) -> dict:
    """Exact ELBO + backward of a softmax policy over all k^n joint actions."""
    values = random_values(n, k, batch, seed, device=device)
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, k**n, generator=gen).to(device).requires_grad_(True)

    @functools.partial(synced, device=device)
    def step():
        logits.grad = None
        q = values.table().flatten(1)
        logp = torch.log_softmax(logits, dim=1)
        (logp.exp() * (q - logp)).sum().backward()

    return time_call(step, repeats)


def interleaved(k: int, width: int, batch: int, rounds: int, seed: int,
                device: torch.device = torch.device("cpu")) -> list[dict]:
    """t(64) / t(8) per (factor graph, evaluator), the cases in turns, minimum CPU ms (wall
    ms on an accelerator)."""
    steps = {}
    for graph in ("random", "line"):
        for n in (8, 64):
            values = random_values(n, k, batch, seed, graph, device)
            circuit = selective(n, k, width=width).to(device)
            gen = torch.Generator().manual_seed(seed)
            params = torch.randn(batch, circuit.num_params, generator=gen).to(device).requires_grad_(True)
            with torch.no_grad():
                gap = float((elbo(values, engine(circuit, params))
                             - elbo(values, circuit.distribution(params))).abs().max())
            if not gap <= 1e-3 * n:
                raise SystemExit(f"elbo_scaling: engine and region tree differ by {gap:.3g} "
                                 f"(n={n}, {graph} graph); not timing a wrong answer")
            for name, make in (("engine", functools.partial(engine, circuit)),
                               ("region tree", circuit.distribution)):
                def step(values=values, params=params, make=make):
                    params.grad = None
                    elbo(values, make(params)).sum().backward()
                steps[graph, name, n] = synced(step, device)
    for step in steps.values():
        step()
        step()
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    best = dict.fromkeys(steps, math.inf)
    for _ in range(rounds):
        for key, step in steps.items():
            start = clock()
            step()
            best[key] = min(best[key], clock() - start)
    rows = []
    for graph in ("random", "line"):
        for name in ("engine", "region tree"):
            t8, t64 = 1e3 * best[graph, name, 8], 1e3 * best[graph, name, 64]
            rows.append({"graph": graph, "evaluator": name, "cpu_ms_8": t8, "cpu_ms_64": t64,
                         "ratio_64_over_8": t64 / t8})
            print(f"interleaved, {graph} graph, {name}: n=8 {t8:.1f} ms, n=64 {t64:.1f} ms, "
                  f"ratio {t64 / t8:.1f}", flush=True)
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ns = [r["n"] for r in rows]
    for key, label, style in (("circuit", "exact ELBO, selective(n, 6, 8)", "o-"),
                              ("enumeration", "enumeration, softmax over 6^n", "s-")):
        pts = [(r["n"], r[key]["cpu_ms"]) for r in rows if r[key] is not None]
        ax.plot(*zip(*pts), style, label=label)
    ref = next(r for r in rows if r["n"] == 8) if 8 in ns else rows[0]
    ax.plot(ns, [ref["circuit"]["cpu_ms"] * n / ref["n"] for n in ns], "k:", label="linear in n")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("agents n")
    ax.set_ylabel("forward + backward, CPU ms (batch 256)")
    ax.set_title("Exact ELBO cost vs agents (k = 6, 2n pairwise factors)", fontsize=10)
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 5, 6, 7, 8, 12, 16, 24, 32, 48, 64])
    parser.add_argument("--actions", type=int, default=6)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu",
                        help="torch device (cpu, cuda); on an accelerator the wall time is the "
                             "figure to read (each call ends with a synchronisation)")
    parser.add_argument("--max-enum-entries", type=int, default=2**27,
                        help="run enumeration when batch * k^n is at most this")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--interleaved", type=int, default=0, metavar="R",
                        help="also measure t(64)/t(8) with the cases in turns for R rounds "
                             "(random and line graphs, engine and region tree)")
    parser.add_argument("--out", type=Path, default=RESULTS / "elbo_scaling.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available on this machine")
    k = args.actions
    rows = []
    load_before = os.getloadavg()
    for n in args.sizes:
        row = {"n": n, "circuit": circuit_case(n, k, args.width, args.batch, args.repeats,
                                               args.seed, device),
               "enumeration": None}
        if args.batch * k**n <= args.max_enum_entries:
            row["enumeration"] = enumeration_case(n, k, args.batch, args.repeats, args.seed,
                                                  device)
        rows.append(row)
        enum = row["enumeration"]
        print(f"n={n:3d}  factors={row['circuit']['factors']:3d}  "
              f"ELBO+grad {row['circuit']['wall_ms']:9.1f} ms wall {row['circuit']['cpu_ms']:9.1f} ms cpu"
              + (f"  enumeration {enum['wall_ms']:9.1f} ms wall {enum['cpu_ms']:9.1f} ms cpu" if enum else ""),
              flush=True)
    by_n = {r["n"]: r["circuit"] for r in rows}
    ratio = ({unit: by_n[64][unit] / by_n[8][unit] for unit in ("wall_ms", "cpu_ms")}
             if {8, 64} <= by_n.keys() else None)
    result = {
        "benchmark": "elbo_scaling",
        "command": "python benchmarks/elbo_scaling.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "device": str(device),
        "machine": machine(threads=args.threads, load_average_before=load_before,
                           load_average_after=os.getloadavg()),
        "config": {"actions": k, "width": args.width, "batch": args.batch, "repeats": args.repeats,
                   "alpha": 1.0, "seed": args.seed, "max_enum_entries": args.max_enum_entries},
        "results": rows,
        "ratio_64_over_8": ratio,
        "target_ratio": 10,
        "interleaved": (interleaved(k, args.width, args.batch, args.interleaved, args.seed,
                                    device) if args.interleaved else None),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    if ratio is not None:
        print(f"time(n=64) / time(n=8): {ratio['cpu_ms']:.1f} (cpu), {ratio['wall_ms']:.1f} (wall); "
              f"target <= 10")
    return result


if __name__ == "__main__":
    main()
