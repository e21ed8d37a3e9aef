"""Timing helpers shared by the engine benchmarks (``engine.py``, ``cirkit_compare.py``)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable

import torch


def seconds(fn: Callable[[], object], device: str) -> float:
    """CPU seconds of ``fn`` on CPU; wall seconds (synchronised) on an accelerator."""
    if device == "cpu":
        start = time.process_time()
        fn()
        return time.process_time() - start
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, device: str,
                seed: int = 0) -> dict[str, list[float]]:
    """Seconds of every one of ``fns`` in each of ``repeats`` rounds, each round in a fresh
    random order (seeded), so that no call always runs right after the same other one.

    A call's time depends on what ran just before it: on CPU a forward right after another
    model's forward + backward runs slower than after a forward, so a fixed order charges
    that to whichever call always follows the expensive one.
    """
    rng = random.Random(seed)
    order = list(fns)
    samples: dict[str, list[float]] = {name: [] for name in order}
    for _ in range(repeats):
        rng.shuffle(order)
        for name in order:
            samples[name].append(seconds(fns[name], device))
    return samples


def forward_and_backward(log_prob: Callable[[], torch.Tensor],
                         parameters: Callable[[], Iterable[torch.Tensor]]
                         ) -> tuple[Callable[[], None], Callable[[], None]]:
    """Two timed calls of one model: its forward without autograd, and its forward plus the
    backward of the summed log-likelihoods (gradients of ``parameters()`` cleared first)."""
    def forward() -> None:
        with torch.no_grad():
            log_prob()

    def forward_backward() -> None:
        for p in parameters():
            p.grad = None
        log_prob().sum().backward()

    return forward, forward_backward
