"""Our circuit engine against libcirkit 0.3.1 on the same circuits.

Each circuit is built in cirkit (a ``RandomBinaryTree`` region graph over 32 variables
with 6 states, Tucker layers: a Kronecker product of two regions' units followed by a dense
sum layer; categorical inputs) and compiled (torch backend, ``lse-sum`` semiring,
folded). The same circuit is rebuilt node by node with our API from cirkit's unfolded
compile (same seed, so the same parameters; the folded compile is checked equal to it):
one ``Categorical`` per input unit, one ``Product`` per Kronecker output, one ``Sum`` per
sum unit, with cirkit's probabilities and weights. Both run in float64 for the equality
check (log-likelihoods and gradients w.r.t. the input-unit probabilities' logits... of
the leaves) and in float32 for timing.

Timed, in one process on one thread (CPU time, median of repeats, the two engines
alternating): ``log p(x)`` forward, and forward + backward of its sum w.r.t. every
parameter, at batch 1 / 64 / 1000 / 10000; and the compile time (cirkit: symbolic build +
compile; ours: ``Circuit(root)`` on the node DAG).

Run from the repository root (cirkit is an optional benchmark dependency, not a package
requirement: ``pip install --no-deps libcirkit==0.3.1 opt_einsum graphviz``)::

    nice -n 5 .venv/bin/python benchmarks/cirkit_compare.py

Figures go to ``runs/benchmarks/engine_cirkit.json`` (``--out benchmarks/results/engine_cirkit.json``
for the tracked copy).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from circuits import Categorical, Circuit, Product, Sum
from timing import forward_and_backward, seconds

RESULTS = Path("runs/benchmarks/engine_cirkit.json")  # tracked: benchmarks/results/ (--out)
NUM_VARS, NUM_STATES = 32, 6
UNITS = (8, 20)                      # ~19k and ~265k edges
BATCHES = (1, 64, 1000, 10000)


def cirkit_symbolic(units: int, seed: int = 42):
    from cirkit.templates import utils as tu
    from cirkit.templates.region_graph.algorithms.random import RandomBinaryTree

    rg = RandomBinaryTree(NUM_VARS, seed=seed)
    inputs = tu.name_to_input_layer_factory("categorical", num_categories=NUM_STATES)
    weights = tu.parameterization_to_factory(
        tu.Parameterization(activation="softmax", initialization="normal"))
    return rg.build_circuit(input_factory=inputs, sum_product="tucker", sum_weight_factory=weights,
                            num_input_units=units, num_sum_units=units, num_classes=1)


def cirkit_compile(symbolic, fold: bool, seed: int = 0):
    from cirkit.pipeline import PipelineContext

    torch.manual_seed(seed)
    return PipelineContext(backend="torch", semiring="lse-sum", fold=fold, optimize=False).compile(symbolic)


def to_ours(unfolded) -> tuple[Circuit, dict]:
    """Our circuit with the units, products and weights of cirkit's unfolded circuit, and
    the map from each cirkit layer to its nodes (one per unit)."""
    made = {}
    for layer in unfolded.topological_ordering():
        kind = type(layer).__name__
        ins = [made[i] for i in unfolded.layer_inputs(layer)]
        if kind == "TorchCategoricalLayer":
            var = int(layer.scope_idx.reshape(-1)[0])
            probs = layer.probs().detach().double()[0]                # [K, C]
            made[layer] = [Categorical(var, NUM_STATES, logits=torch.log(p).tolist()) for p in probs]
        elif kind == "TorchKroneckerLayer":
            left, right = ins
            made[layer] = [Product([a, b]) for a in left for b in right]
        elif kind == "TorchSumLayer":
            (children,) = ins
            w = layer.weight().detach().double()[0]                    # [K_out, K_in]
            made[layer] = [Sum(children, logits=torch.log(row).tolist()) for row in w]
        else:
            raise TypeError(f"to_ours: unexpected cirkit layer {kind}")
    (out,) = unfolded.outputs
    (root,) = made[out]
    return Circuit(root, dtype=torch.float64), made


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def check_equal(ours: Circuit, made: dict, unfolded, folded, x: torch.Tensor) -> dict:
    """float64: log-likelihoods (ours, cirkit folded and unfolded) and the gradients of their
    sum w.r.t. every parameter (cirkit's softmax logits are ours up to a per-group shift,
    which leaves gradients unchanged)."""
    folded, unfolded = folded.double(), unfolded.double()
    theirs = folded(x).reshape(-1)
    mine = ours.log_prob(x)
    unfolded.zero_grad()
    unfolded(x).sum().backward()
    ours.zero_grad()
    mine.sum().backward()
    plan = ours._plan_on(torch.device("cpu"))
    grad = ours.logits.grad
    diffs = []
    for layer in unfolded.topological_ordering():
        kind = type(layer).__name__
        if kind == "TorchKroneckerLayer":
            continue
        (ptensor,) = list(layer.parameters())
        their = ptensor.grad[0]                                       # [K_out, K_in or C]
        for unit, node in enumerate(made[layer]):
            nid = plan.node_of[node]
            where = plan.param_node == nid if kind == "TorchSumLayer" else plan.param_leaf == nid - 1
            diffs.append(float((grad[where] - their[unit]).abs().max()))
    with torch.no_grad():
        diff_unfolded = float((theirs - unfolded(x).reshape(-1)).abs().max())
    return {"max_abs_diff_log_prob": float((theirs - mine).detach().abs().max()),
            "max_abs_diff_unfolded": diff_unfolded,
            "max_abs_diff_grad": max(diffs), "max_abs_grad": float(grad.abs().max())}


def time_pair(ours: Circuit, theirs, x: torch.Tensor, repeats: int, device: str) -> dict:
    """Median CPU ms of forward and forward+backward, ours and cirkit's, alternating."""
    fwd_ours, fb_ours = forward_and_backward(lambda: ours.log_prob(x), ours.parameters)
    fwd_theirs, fb_theirs = forward_and_backward(lambda: theirs(x), theirs.parameters)

    fns = {"forward": (fwd_ours, fwd_theirs), "forward_backward": (fb_ours, fb_theirs)}
    out = {}
    for name, (a, b) in fns.items():
        a(), b()
        ta, tb = [], []
        for _ in range(repeats):
            ta.append(seconds(a, device))
            tb.append(seconds(b, device))
        out[name] = {"ours_ms": median_ms(ta), "cirkit_ms": median_ms(tb),
                     "speedup": statistics.median(tb) / statistics.median(ta)}
    return out


def compile_times(units: int, repeats: int) -> dict:
    ours_s, theirs_s = [], []
    for _ in range(repeats):
        start = time.process_time()
        symbolic = cirkit_symbolic(units)
        cirkit_compile(symbolic, fold=True)
        theirs_s.append(time.process_time() - start)
        root = to_ours(cirkit_compile(symbolic, fold=False))[0].root
        start = time.process_time()
        Circuit(root)
        ours_s.append(time.process_time() - start)
    return {"ours_ms": median_ms(ours_s), "cirkit_ms": median_ms(theirs_s),
            "ratio_ours_over_cirkit": statistics.median(ours_s) / statistics.median(theirs_s),
            "ours_min_ms": min(ours_s) * 1e3, "cirkit_min_ms": min(theirs_s) * 1e3,  # cirkit's median
            "ratio_of_minima": min(ours_s) / min(theirs_s)}                 # varies with garbage collection


def repeats_for(batch: int, edges: int) -> int:
    return max(3, min(50, int(2e8 / (edges * batch + 1e6))))


def bench(units: int, batches, device: str) -> dict:
    symbolic = cirkit_symbolic(units)
    unfolded = cirkit_compile(symbolic, fold=False).double()
    ours64, made = to_ours(unfolded)
    folded = cirkit_compile(symbolic, fold=True)
    x = torch.randint(0, NUM_STATES, (256, NUM_VARS), generator=torch.Generator().manual_seed(0))
    check = check_equal(ours64, made, unfolded, folded, x)
    print(f"  float64 check: |log p| diff {check['max_abs_diff_log_prob']:.1e}, "
          f"grad diff {check['max_abs_diff_grad']:.1e}", flush=True)
    if not (check["max_abs_diff_log_prob"] < 1e-9 and check["max_abs_diff_grad"] < 1e-9):
        raise SystemExit(f"cirkit_compare: values differ ({check}); not timing a wrong answer")
    edges = ours64.num_edges
    ours32 = Circuit(ours64.root).to(device)
    folded = folded.float().to(device)
    row = {"units": units, "edges": edges, "nodes": ours64.num_nodes, "check_float64": check,
           "batches": {}}
    for batch in batches:
        xb = torch.randint(0, NUM_STATES, (batch, NUM_VARS),
                           generator=torch.Generator().manual_seed(batch)).to(device)
        row["batches"][batch] = time_pair(ours32, folded, xb, repeats_for(batch, edges), device)
        fwd, fb = row["batches"][batch]["forward"], row["batches"][batch]["forward_backward"]
        print(f"  {edges} edges batch {batch:5d}: forward ours {fwd['ours_ms']:8.2f} ms cirkit "
              f"{fwd['cirkit_ms']:8.2f} ms (x{fwd['speedup']:.2f}); fwd+bwd ours {fb['ours_ms']:8.2f} "
              f"cirkit {fb['cirkit_ms']:8.2f} (x{fb['speedup']:.2f})", flush=True)
    row["compile"] = compile_times(units, 3)
    print(f"  compile: ours {row['compile']['ours_ms']:.0f} ms, cirkit {row['compile']['cirkit_ms']:.0f} ms",
          flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--units", type=int, nargs="+", default=list(UNITS))
    parser.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--compile-only", action="store_true",
                        help="time only the compiles (5 repeats each; write to a file other than the default)")
    args = parser.parse_args(argv)
    try:
        import cirkit  # noqa: F401
    except ModuleNotFoundError:
        print("cirkit_compare: libcirkit is not installed; "
              "pip install --no-deps libcirkit==0.3.1 opt_einsum graphviz", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    from engine import machine_record  # noqa: E402  (benchmarks/ is the script's directory)

    timer = "time.process_time (CPU seconds)" if args.device == "cpu" else "wall seconds, synchronised"
    result = {"machine": machine_record(libcirkit=_version("libcirkit")),
              "device": args.device, "threads": args.threads, "timer": timer, "circuits": []}
    for units in args.units:
        print(f"cirkit Tucker RandomBinaryTree, {NUM_VARS} vars x {NUM_STATES} states, {units} units",
              flush=True)
        if args.compile_only:
            result["circuits"].append({"units": units, "compile": compile_times(units, 5)})
            print(f"  compile: {result['circuits'][-1]['compile']}", flush=True)
        else:
            result["circuits"].append(bench(units, args.batches, args.device))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


def _version(name: str) -> str:
    from importlib.metadata import version
    return version(name)


if __name__ == "__main__":
    sys.exit(main())
