"""benchmarks/timing.py: interleaved timing varies the order of the calls."""

import itertools

from tests.run_helpers import load_script


def _record(repeats: int, seed: int) -> tuple[dict, list[str]]:
    calls: list[str] = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abcd"}
    samples = load_script("benchmarks/timing.py").interleaved(fns, repeats, "cpu", seed=seed)
    return samples, calls


def test_every_call_is_timed_once_per_round():
    samples, calls = _record(repeats=7, seed=0)
    assert sorted(samples) == list("abcd")
    assert all(len(v) == 7 and min(v) >= 0 for v in samples.values())
    for r in range(7):                       # each round calls every function once
        assert sorted(calls[4 * r:4 * r + 4]) == list("abcd")


def test_every_call_follows_every_other_one():
    """A fixed order would have each call always follow the same one (``a`` after ``d``)."""
    _, calls = _record(repeats=40, seed=0)
    followed = set(zip(calls, calls[1:]))
    assert followed >= set(itertools.permutations("abcd", 2))


def test_the_order_is_seeded():
    assert _record(5, seed=3)[1] == _record(5, seed=3)[1]
    assert _record(5, seed=3)[1] != _record(5, seed=4)[1]
