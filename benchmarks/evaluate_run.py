"""Greedy evaluation of a finished run beside the uniform random policy, on fresh episodes.

    python benchmarks/evaluate_run.py runs/bench/coverage-paper/runs/coverage-6x20x20-fixed/vdn/s0
    python benchmarks/evaluate_run.py RUN --episodes 200 --out benchmarks/results/x.json

The same as ``spnpolicy evaluate RUN [--episodes N] [--seed S] [--out FILE] [--stochastic]``
(``spnpolicy evaluate --help``), kept for the commands recorded in benchmark results; the
work is :func:`spnpolicy.evaluate.evaluate_saved_run`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from spnpolicy.cli import main as cli_main


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(["evaluate", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
