"""Engine speed: our layered circuit execution against a dense reference and SPFlow.

0. Against an EinsumNetworks-style evaluator of the same RAT-SPNs
   (:mod:`einsum_reference`, ~19k and ~287k edges, same weights, checked equal in float64):
   ``log_prob`` forward (with the circuit's normalised parameters kept, and fresh: as after a
   parameter update) and forward + backward (w.r.t. every parameter) at batch 1, 64,
   1000 and 10000; beside them, our parameter normalisation alone with its backward (the
   part of forward + backward that the kept-parameter forward skips). CPU time on CPU (one
   thread by default), synchronised wall time on an accelerator (``--device cuda``); median
   of repeats, the six timed calls in a fresh random order each round
   (:func:`timing.interleaved`: a call's time depends on the call before it).
1. Log-likelihood throughput on one RAT-SPN (``random_tensorized``: 32 variables x 6
   states, 4 repetitions, depth 3, 8 sums and 8 inputs per region, 18,976 edges), built
   once with our node API and converted node for node to SPFlow 0.0.48's classic API
   (:mod:`spflow_reference`). Both evaluate the same 1000 samples; their values must agree
   to 1e-3. Throughput is ``edges * batch / seconds`` (median over repeats after warm-up,
   the two engines timed alternately so that load changes hit both alike).
2. The cost of what the exact actor loss needs, on ``selective(n, 6, 8)`` with a batch of
   256 parameter sets: 2n pairwise scope marginals + entropy + backward, for several n.

Run from the repository root (SPFlow: ``pip install --no-deps spflow==0.0.48``)::

    .venv/bin/python benchmarks/engine.py

Figures and the machine go to ``runs/benchmarks/engine.json`` (``--out
benchmarks/results/<name>.json`` for a tracked copy).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shlex
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from circuits import Circuit, passes
from circuits.structures import random_tensorized, selective
from einsum_reference import EinsumReference
from spflow_reference import count_edges, import_spflow, spflow_log_likelihood, to_spflow
from spnpolicy.machine import git_commit, machine
from timing import forward_and_backward, interleaved, seconds

RESULTS = Path("runs/benchmarks/engine.json")  # tracked copies: benchmarks/results/ (--out)
RAT = dict(num_vars=32, num_states=6, depth=3, num_repetitions=4, num_sums=8,
           num_input_distributions=8, seed=0)
RAT_LARGE = dict(RAT, num_sums=21, num_input_distributions=21)
REFERENCE_BATCHES = (1, 64, 1000, 10000)
BATCH = 1000
TOLERANCE = 1e-3
SELECTIVE_SIZES = (8, 16, 32, 64)
SELECTIVE_BATCH = 256
TARGET_RATIO = 100.0


def bench_log_likelihood(rounds: int, ours_per_round: int) -> dict:
    """Time ``log_prob`` of the RAT-SPN, ours and SPFlow's, and check that they agree."""
    circuit = random_tensorized(**RAT)
    edges = count_edges(circuit.root)
    reference = to_spflow(circuit.root)
    x = torch.randint(0, RAT["num_states"], (BATCH, RAT["num_vars"]),
                      generator=torch.Generator().manual_seed(0))
    x_np = x.numpy()

    def ours():
        with torch.no_grad():
            return circuit.log_prob(x)

    ours_values = ours().double().numpy()
    spflow_values = spflow_log_likelihood(reference, x_np)[:, 0]
    max_abs_diff = float(np.abs(ours_values - spflow_values).max())
    if not max_abs_diff <= TOLERANCE:
        raise SystemExit(f"engine benchmark: our log-likelihoods differ from SPFlow's by "
                         f"{max_abs_diff:.3g} (> {TOLERANCE}); not timing a wrong answer")

    for _ in range(3):
        ours()
    ours_s, spflow_s = [], []
    for _ in range(rounds):
        ours_s.extend(seconds(ours, "cpu") for _ in range(ours_per_round))
        spflow_s.append(seconds(lambda: spflow_log_likelihood(reference, x_np), "cpu"))
    ours_t, spflow_t = statistics.median(ours_s), statistics.median(spflow_s)
    return {
        "circuit": {"builder": "circuits.structures.random_tensorized", **RAT,
                    "edges": edges, "nodes": circuit.num_nodes},
        "batch": BATCH,
        "dtype": {"ours": str(circuit.logits.dtype).removeprefix("torch."), "spflow": "float64"},
        "max_abs_diff": max_abs_diff,
        "ours": _timing(ours_s, ours_t, edges),
        "spflow": _timing(spflow_s, spflow_t, edges),
        "ratio": spflow_t / ours_t,
        "target_ratio": TARGET_RATIO,
    }


def bench_reference(rat: dict, batches, device: str, budget_s: float) -> dict:
    """Ours against the EinsumNetworks-style reference on one RAT-SPN: forward and forward +
    backward per batch size (ratios > 1: ours is faster)."""
    circuit = random_tensorized(**rat)
    x = torch.randint(0, rat["num_states"], (256, rat["num_vars"]),
                      generator=torch.Generator().manual_seed(0))
    ours64 = Circuit(circuit.root, dtype=torch.float64)
    reference = EinsumReference(circuit.root, torch.float32)
    with torch.no_grad():
        diff64 = float((EinsumReference(circuit.root, torch.float64)(x) - ours64.log_prob(x)).abs().max())
        diff32 = float((reference(x) - circuit.log_prob(x)).abs().max())
    if not (diff64 < 1e-9 and diff32 < 1e-3):
        raise SystemExit(f"engine benchmark: the reference differs from the engine "
                         f"(float64 {diff64:.3g}, float32 {diff32:.3g}); not timing a wrong answer")
    circuit.to(device)
    reference.to(device)
    for t in reference.parameters():
        t.requires_grad_(True)
    row = {"circuit": {"builder": "circuits.structures.random_tensorized", **rat,
                       "edges": circuit.num_edges, "nodes": circuit.num_nodes},
           "max_abs_diff": {"float64": diff64, "float32": diff32}, "batches": {}}
    for batch in batches:
        xb = torch.randint(0, rat["num_states"], (batch, rat["num_vars"]),
                           generator=torch.Generator().manual_seed(batch)).to(device)

        ours_fwd, ours_fb = forward_and_backward(lambda: circuit.log_prob(xb),
                                                 circuit.parameters)
        ref_fwd, ref_fb = forward_and_backward(lambda: reference(xb), reference.parameters)

        def ours_fwd_fresh():
            circuit._own_params = None      # as after a parameter update: normalise again
            ours_fwd()

        fns = {"ours_forward": ours_fwd, "ours_forward_fresh": ours_fwd_fresh, "reference_forward": ref_fwd,
               "ours_forward_backward": ours_fb, "reference_forward_backward": ref_fb,
               "ours_normalise": normalise_forward_backward(circuit)}
        for fn in fns.values():
            fn()
        first = seconds(ours_fb, device) + seconds(ref_fb, device)
        repeats = max(3, min(30, int(budget_s / max(first, 1e-6))))
        samples = interleaved(fns, repeats, device, seed=batch)
        ms = {name: statistics.median(v) * 1e3 for name, v in samples.items()}
        row["batches"][batch] = {
            **{f"{name}_ms": value for name, value in ms.items()}, "repeats": repeats,
            "speedup_forward": ms["reference_forward"] / ms["ours_forward"],
            "speedup_forward_fresh": ms["reference_forward"] / ms["ours_forward_fresh"],
            "speedup_forward_backward": ms["reference_forward_backward"] / ms["ours_forward_backward"],
            "ours_backward_over_forward": ms["ours_forward_backward"] / ms["ours_forward"],
            "ours_normalise_over_forward": ms["ours_normalise"] / ms["ours_forward"],
            "ours_backward_less_normalise_over_forward":
                (ms["ours_forward_backward"] - ms["ours_normalise"]) / ms["ours_forward"],
            "reference_backward_over_forward": ms["reference_forward_backward"] / ms["reference_forward"]}
        r = row["batches"][batch]
        print(f"  {circuit.num_edges} edges, batch {batch:5d}: forward ours {ms['ours_forward']:9.2f} ms, "
              f"reference {ms['reference_forward']:9.2f} ms (x{r['speedup_forward']:.2f}; fresh params "
              f"{ms['ours_forward_fresh']:.2f} ms, x{r['speedup_forward_fresh']:.2f}); fwd+bwd ours "
              f"{ms['ours_forward_backward']:9.2f}, reference {ms['reference_forward_backward']:9.2f} "
              f"(x{r['speedup_forward_backward']:.2f}); ours fwd+bwd/fwd "
              f"{r['ours_backward_over_forward']:.2f} (normalisation alone "
              f"{r['ours_normalise_over_forward']:.2f}, the rest "
              f"{r['ours_backward_less_normalise_over_forward']:.2f})", flush=True)
    return row


def normalise_forward_backward(circuit: Circuit):
    """A timed call of the parameter normalisation alone, forward and backward, as ``log_prob``
    with a gradient runs it (:func:`~circuits.passes.normalise`, then autograd's
    backward): the part of forward + backward that the kept-parameter forward does not pay,
    since a gradient step changes every parameter."""
    plan = circuit._plan_on(circuit.logits.device)
    logits = circuit.logits.detach().requires_grad_()
    grad = torch.randn(1, plan.num_params, generator=torch.Generator().manual_seed(0),
                       dtype=logits.dtype).to(logits.device)

    def run() -> None:
        torch.autograd.grad(passes.normalise(plan, logits.unsqueeze(0)), logits, grad)
    return run


def _timing(samples: list[float], median: float, edges: int) -> dict:
    return {"median_ms": median * 1e3, "min_ms": min(samples) * 1e3, "repeats": len(samples),
            "edge_samples_per_s": edges * BATCH / median}


def bench_selective(repeats: int, seed: int = 0, device: str = "cpu") -> list[dict]:
    """Median time of scope marginals (2n pairs) + entropy + backward on selective(n, 6, 8),
    on ``device``."""
    rows = []
    for n in SELECTIVE_SIZES:
        start = time.perf_counter()
        circuit = selective(n, 6, 8).to(device)
        build_s = time.perf_counter() - start
        rng = random.Random(seed)
        pairs = rng.sample(list(itertools.combinations(range(n), 2)), 2 * n)
        params = torch.randn(SELECTIVE_BATCH, circuit.num_params,
                             generator=torch.Generator().manual_seed(seed)
                             ).to(device).requires_grad_()

        def step():
            params.grad = None
            dist = circuit.distribution(params)
            loss = dist.scope_marginals(pairs).sum() + dist.entropy().sum()
            loss.backward()

        first_s = seconds(step, device)  # includes building the cached table plan for these pairs
        for _ in range(2):
            step()
        times = [seconds(step, device) for _ in range(repeats)]
        rows.append({"num_vars": n, "num_states": 6, "width": 8, "batch": SELECTIVE_BATCH,
                     "num_pairs": len(pairs), "edges": circuit.num_edges,
                     "num_params": circuit.num_params, "build_ms": build_s * 1e3,
                     "first_call_ms": first_s * 1e3, "median_ms": statistics.median(times) * 1e3,
                     "min_ms": min(times) * 1e3, "repeats": repeats,
                     "device": str(params.device)})
    return rows


def machine_record(**extra) -> dict:
    """Where and how the figures were produced (``extra``: versions of optional peers)."""
    python = Path(sys.executable)
    if python.is_relative_to(Path.cwd()):
        python = python.relative_to(Path.cwd())
    return machine(command=" ".join(shlex.quote(str(a)) for a in [python, *sys.argv]),
                   git_commit=git_commit("circuits"),
                   omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"), **extra)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice). On a busy "
                             "machine, 1 thread or OMP_WAIT_POLICY=PASSIVE avoids OpenMP "
                             "spin-wait stalls that make timings erratic")
    parser.add_argument("--rounds", type=int, default=7,
                        help="timing rounds; each times SPFlow once and ours --ours-per-round times")
    parser.add_argument("--ours-per-round", type=int, default=5)
    parser.add_argument("--selective-repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help=f"JSON results file (default {RESULTS}; the tracked ones are in "
                             f"benchmarks/results/)")
    parser.add_argument("--device", default="cpu",
                        help="torch device of the reference comparison and the selective "
                             "section (SPFlow runs on the CPU)")
    parser.add_argument("--batches", type=int, nargs="+", default=list(REFERENCE_BATCHES))
    parser.add_argument("--budget", type=float, default=3.0,
                        help="seconds of timing per circuit and batch size (sets the repeats)")
    parser.add_argument("--sections", nargs="+", default=["reference", "spflow", "selective"],
                        choices=["reference", "spflow", "selective"])
    args = parser.parse_args(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available on this machine")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    # Other processes on the machine distort the timings; the load average says how much.
    extra = {}
    if "spflow" in args.sections:
        try:
            import_spflow()
            extra["spflow"] = version("spflow")
        except ImportError as err:
            print(f"engine benchmark: skipping SPFlow: {err}", file=sys.stderr)
            args.sections.remove("spflow")
    result = {"machine": machine_record(**extra), "device": args.device,
              "load_average_1min": {"start": os.getloadavg()[0]}}
    if "reference" in args.sections:
        result["reference"] = []
        for rat in (RAT, RAT_LARGE):
            print(f"RAT-SPN vs the EinsumNetworks-style reference ({args.device}):", flush=True)
            result["reference"].append(bench_reference(rat, args.batches, args.device, args.budget))
    if "spflow" in args.sections:
        _spflow_section(result, args)
    if "selective" in args.sections:
        _selective_section(result, args)
    result["load_average_1min"]["end"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


def _spflow_section(result: dict, args) -> None:
    ll = bench_log_likelihood(args.rounds, args.ours_per_round)
    result["log_likelihood"] = ll
    print(f"RAT-SPN log-likelihood, {ll['circuit']['edges']} edges, batch {BATCH}: "
          f"max |ours - SPFlow| = {ll['max_abs_diff']:.2e}")
    for name in ("ours", "spflow"):
        t = ll[name]
        print(f"  {name:7s} {t['median_ms']:9.2f} ms  {t['edge_samples_per_s']:.3e} edge*samples/s")
    verdict = "meets" if ll["ratio"] >= TARGET_RATIO else "MISSES"
    print(f"  ratio   {ll['ratio']:.1f}x ({verdict} the {TARGET_RATIO:.0f}x target)")


def _selective_section(result: dict, args) -> None:
    result["selective"] = bench_selective(args.selective_repeats, device=args.device)
    print(f"selective(n, 6, 8), batch {SELECTIVE_BATCH}, {args.device}: 2n scope marginals + "
          f"entropy + backward")
    for row in result["selective"]:
        print(f"  n={row['num_vars']:3d}  {row['edges']:6d} edges  {row['median_ms']:8.2f} ms")


if __name__ == "__main__":
    sys.exit(main())
