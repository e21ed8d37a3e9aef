"""Run a suite: expand it into runs, skip the finished ones, train the rest in parallel.

```python
from spnpolicy.bench.runner import plan, run_all
runs = plan(get_suite("matrix"), "bench/matrix", algos=["spn-ac"], seeds=3)
outcome = run_all(runs, workers=2)          # outcome.records: a RunRecord per finished run
```

Each run trains in ``OUT/runs/<task>/<algo>/s<seed>/`` with ``resume=True``: a run that
reached its budget is skipped, one that was interrupted continues from its last
checkpoint (a run killed before its first checkpoint starts over), and one that another
``spnpolicy bench`` process is training is reported as failed, not trained twice. Workers
are spawned processes with one torch thread each, which exit when the ``spnpolicy bench``
process dies; with a Ray address the runs are Ray tasks instead (one CPU each; skipping and
resuming then need ``OUT`` on a filesystem the nodes share).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import multiprocessing
import os
import pickle
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from spnpolicy.algos.config import parse_field_value
from spnpolicy.algos.registry import ALGORITHMS, get_algorithm
from spnpolicy.bench.records import RunRecord, load_run
from spnpolicy.bench.suites import Protocol, Suite, Task
from spnpolicy.training.rundir import RunDir

__all__ = ["BenchRun", "Outcome", "config_fields", "execute", "finished_record", "parse_seeds",
           "plan", "run_all", "suite_config"]


@dataclass(frozen=True)
class BenchRun:
    """One (task, algorithm, seed) of a suite, with everything a worker needs."""

    suite: str
    task: Task
    algo: str
    seed: int
    config: dict[str, Any]
    """Config overrides: the suite's protocol, its config for the algo (:func:`suite_config`)
    and the user's ``overrides`` (below)."""
    run_dir: Path
    overrides: dict[str, Any] = field(default_factory=dict)
    """The user's overrides (``--set``) among ``config``: a finished run made without them
    is not taken as this run."""

    @property
    def total_steps(self) -> int:
        return self.config["total_steps"]

    def label(self) -> str:
        return f"{self.task.name} {self.algo} s{self.seed}"


@dataclass
class Outcome:
    """What :func:`run_all` returns: the runs' records (finished or skipped, in plan
    order) and the runs that raised, with the error message."""

    records: list[RunRecord] = field(default_factory=list)
    failures: list[tuple[BenchRun, str]] = field(default_factory=list)


def parse_seeds(text: str) -> int | tuple[int, ...]:
    """``"3"`` -> 3 (seeds 0, 1, 2); ``"0,4,7"`` or ``"5,"`` -> those seeds."""
    try:
        if "," not in text:
            return int(text)
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"seeds must be a count (3) or a comma-separated list (0,4,7), got "
                         f"{text!r}") from None


def _seed_list(seeds: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"the number of seeds must be >= 1, got {seeds}")
        return tuple(range(seeds))
    chosen = tuple(seeds)
    if not chosen or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in chosen):
        raise ValueError(f"seeds must be ints >= 0, got {list(chosen)}")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"seeds must not repeat, got {list(chosen)}")
    return chosen


def _select(kind: str, suite: Suite, chosen: Sequence[str] | None,
            valid: tuple[str, ...]) -> tuple[str, ...]:
    if chosen is None:
        return valid
    unknown = [name for name in chosen if name not in valid]
    if unknown or not chosen:
        raise ValueError(f"unknown {kind}(s) {unknown or list(chosen)} for suite "
                         f"{suite.name!r}; valid: {', '.join(valid)}")
    return tuple(dict.fromkeys(chosen))


def config_fields(algo: str, config: dict[str, Any]) -> dict[str, Any]:
    """The entries of a suite-style ``config`` that ``algo``'s config class has and does not
    fix (a suite's config applies to every algorithm with the field; the others, and those
    whose value of it defines them, ignore it)."""
    spec = get_algorithm(algo)
    names = {f.name for f in dataclasses.fields(spec.config_cls)} - set(spec.fixed)
    return {k: v for k, v in config.items() if k in names}


def suite_config(suite: Suite, algo: str) -> dict[str, Any]:
    """The config overrides ``suite`` sets for ``algo``: the fields of ``suite.config`` that
    ``algo``'s config has (:func:`config_fields`), then ``suite.algo_config[algo]``."""
    return config_fields(algo, suite.config) | suite.algo_config.get(algo, {})


def _config(suite: Suite, algo: str, protocol: Protocol) -> dict[str, Any]:
    return protocol.overrides() | suite_config(suite, algo)


def _split_overrides(overrides: dict[str, str], algos: Sequence[str]
                     ) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """``overrides`` (text, the CLI's ``--set``) -> (those for every algorithm with the
    field, those for one algorithm: ``{algo: {key: text}}`` from ``"ALGO:KEY"`` keys).
    ValueError for an ``ALGO`` not among ``algos``, a ``KEY`` its config lacks or fixes, or
    a shared key no algorithm of ``algos`` has."""
    shared: dict[str, str] = {}
    per_algo: dict[str, dict[str, str]] = {}
    for name, text in overrides.items():
        algo, sep, key = name.rpartition(":")
        if not sep:
            shared[name] = text
            continue
        if algo not in algos:
            raise ValueError(f"--set {name}={text}: {algo!r} is not an algorithm of this run "
                             f"({', '.join(algos)})")
        if not config_fields(algo, {key: None}):
            raise ValueError(f"--set {name}={text}: {algo}'s config has no field {key!r} it "
                             f"can change; 'spnpolicy config {algo} ENV' lists its fields")
        per_algo.setdefault(algo, {})[key] = text
    unused = [key for key in shared if not any(config_fields(a, {key: None}) for a in algos)]
    if unused:
        raise ValueError(f"--set {', '.join(unused)}: no algorithm of this run "
                         f"({', '.join(algos)}) has {'that' if len(unused) == 1 else 'those'} "
                         f"config field(s); 'spnpolicy config ALGO ENV' lists an "
                         f"algorithm's fields")
    return shared, per_algo


def _overrides(algo: str, overrides: dict[str, str]) -> dict[str, Any]:
    """The ``overrides`` (text) that ``algo``'s config has, parsed to its field types."""
    cls = get_algorithm(algo).config_cls
    return {key: parse_field_value(cls, key, text)
            for key, text in config_fields(algo, overrides).items()}


def plan(suite: Suite, out: str | os.PathLike, algos: Sequence[str] | None = None,
         tasks: Sequence[str] | None = None, seeds: int | Sequence[int] | None = None,
         total_steps: int | None = None,
         overrides: dict[str, str] | None = None) -> list[BenchRun]:
    """The runs of ``suite`` under ``out``, seed by seed (so that a partly run suite has
    every task and algorithm), filtered by ``algos`` (names from the suite, or any other
    registered algorithm) / ``tasks`` (names from the suite),
    ``seeds`` (a count or a list; default the suite's count) and with ``total_steps`` as
    every run's budget (default the suite's). ``overrides``: config fields as text
    (``{"compile": "true"}``, the CLI's ``--set``), set for every algorithm whose config
    has the field, after the suite's; a key ``"ALGO:KEY"`` sets ``KEY`` for ``ALGO`` only,
    after those. ValueError for a name the suite lacks, an algorithm this install does not
    register, or an override no chosen algorithm has."""
    # ``algos`` may also name registered algorithms that the suite does not list
    extra = () if algos is None else tuple(a for a in ALGORITHMS if a not in suite.algos)
    algos = _select("algorithm", suite, algos, suite.algos + extra)
    missing = [a for a in algos if a not in ALGORITHMS]
    if missing:
        raise ValueError(f"suite {suite.name!r} needs algorithm(s) {missing} that are not "
                         f"registered; registered: {', '.join(ALGORITHMS)}; choose others "
                         f"with --algos")
    task_names = _select("task", suite, tasks, suite.task_names())
    protocol = suite.protocol.with_budget(total_steps)
    shared, per_algo = _split_overrides(overrides or {}, algos)
    chosen = {algo: _overrides(algo, shared | per_algo.get(algo, {})) for algo in algos}
    configs = {algo: _config(suite, algo, protocol) | chosen[algo] for algo in algos}
    out = Path(out).absolute()  # workers (Ray tasks) may run in another directory
    return [BenchRun(suite.name, suite.task(name), algo, seed, configs[algo],
                     out / "runs" / name / algo / f"s{seed}", chosen[algo])
            for seed in _seed_list(suite.seeds if seeds is None else seeds)
            for name in task_names for algo in algos]


def finished_record(run: BenchRun) -> RunRecord | None:
    """The record of ``run`` if its directory holds it trained to its budget (with the
    user's ``overrides``, if any), else None: a run made with other overrides then
    goes to :func:`execute`, whose resume refuses it naming the differing field."""
    directory = RunDir(run.run_dir)
    if not directory.has_checkpoint():
        return None
    record = load_run(run.run_dir)
    done = record.history and record.final["step"] >= run.total_steps
    if done and run.overrides:
        saved = directory.read_config().get("config", {})
        done = all(saved.get(key) == json.loads(json.dumps(value))
                   for key, value in run.overrides.items())
    return record if done else None


def execute(run: BenchRun) -> RunRecord:
    """Train ``run`` (resuming from its checkpoint if it has one); its record.

    The run directory is claimed for the duration (:meth:`RunDir.claim`), so a second
    ``spnpolicy bench`` on the same output fails that run (RunBusyError) instead of
    training it a second time into the same files."""
    import spnpolicy

    torch.set_num_threads(1)
    directory = RunDir(run.run_dir)
    with directory.claim():
        if not directory.has_checkpoint():
            directory.clear()   # its metrics would be appended to, not replaced
        directory.write_bench(run.suite, run.task.name)
        spnpolicy.train(run.algo, run.task.env, seed=run.seed, out_dir=run.run_dir,
                        env_kwargs=dict(run.task.env_kwargs), resume=True, progress=False,
                        verbose=False, **run.config)
    return load_run(run.run_dir)


def _exit_with_parent(parent: int, interval: float = 0.5) -> None:
    """Thread body: end this process once its parent ``parent`` (a pid) has gone, so that
    a killed ``spnpolicy bench`` leaves no run training on (its claim is then stale and the
    next command resumes the run from its last checkpoint)."""
    while os.getppid() == parent:
        time.sleep(interval)
    os._exit(1)


def _init_worker(envs: dict[str, Callable] | None = None) -> None:
    """A worker process: one torch thread, the envs the parent registered, and an exit
    when the parent dies."""
    from spnpolicy.envs.registry import register_env

    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True,
                     name="exit-with-parent").start()
    torch.set_num_threads(1)
    for name, factory in (envs or {}).items():
        register_env(name, factory, overwrite=True)


def _picklable_envs() -> dict[str, Callable]:
    """The parent's registered envs that can be sent to spawned workers (module-level
    factories; a lambda cannot, its runs fail with 'unknown env' there)."""
    from spnpolicy.envs.registry import registered_envs

    envs = {}
    for name, factory in registered_envs().items():
        try:
            pickle.dumps(factory)
        except Exception:  # noqa: BLE001  (any pickling failure: leave it out)
            continue
        envs[name] = factory
    return envs


#: ``done(index, record, error)``: called once per run, with a record or an error message.
Done = Callable[[int, "RunRecord | None", "str | None"], None]
Todo = list[tuple[int, BenchRun]]


def _message(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _run_processes(todo: Todo, workers: int, done: Done) -> None:
    if workers == 1:
        for index, run in todo:
            try:
                record = execute(run)
            except Exception as error:  # noqa: BLE001  (one broken run must not lose the others)
                done(index, None, _message(error))
            else:
                done(index, record, None)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                             initargs=(_picklable_envs(),)) as pool:
        futures = {pool.submit(execute, run): index for index, run in todo}
        try:
            for future in as_completed(futures):
                error = future.exception()
                done(futures[future], None if error else future.result(),
                     _message(error) if error else None)
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _run_ray(todo: Todo, address: str, done: Done) -> None:
    try:
        import ray
    except ImportError:
        raise ImportError(RAY_MISSING) from None
    ray.init(address=address, ignore_reinit_error=True)
    remote = ray.remote(num_cpus=1)(execute)
    pending = {remote.remote(run): index for index, run in todo}
    while pending:
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        index = pending.pop(ref)
        try:
            record = ray.get(ref)
        except Exception as error:  # noqa: BLE001  (as in _run_processes)
            done(index, None, _message(error))
        else:
            done(index, record, None)


def _progress_line(count: int, total: int, run: BenchRun, record: RunRecord | None,
                   error: str | None, metric: str, skipped: bool = False) -> str:
    head = f"[{count}/{total}] {run.label()}"
    if error is not None:
        return f"{head}: FAILED {error}"
    final = record.final
    shown = [f"{key} {final[key]:.3g}" for key in dict.fromkeys((metric, "return_mean"))
             if isinstance(final.get(key), (int, float))]
    note = "already finished" if skipped else f"{final.get('wall_time', 0):.0f} s"
    return f"{head}: {', '.join(shown)} at step {final['step']:,d} ({note})"


RAY_MISSING = "--ray needs the ray package: pip install 'spnpolicy[ray]'"


def check_backend(workers: Any, ray_address: str | None = None) -> None:
    """ValueError unless ``workers`` is an int >= 1; ImportError when ``ray_address`` is
    given and the ray package is missing."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    if ray_address is not None and importlib.util.find_spec("ray") is None:
        raise ImportError(RAY_MISSING)


def run_all(runs: Sequence[BenchRun], workers: int = 1, ray_address: str | None = None,
            metric: str = "success_rate", log: Callable[[str], None] = print) -> Outcome:
    """Train the runs that are not finished, ``workers`` at a time (or as Ray tasks on the
    cluster at ``ray_address``), logging a progress line per finished run."""
    check_backend(workers, ray_address)
    results: dict[int, RunRecord] = {}
    outcome = Outcome()
    todo: Todo = []
    for index, run in enumerate(runs):
        record = finished_record(run)
        if record is None:
            todo.append((index, run))
            continue
        results[index] = record
        log(_progress_line(len(results), len(runs), run, record, None, metric, skipped=True))

    def done(index: int, record: RunRecord | None, error: str | None) -> None:
        if record is not None:
            results[index] = record
        else:
            outcome.failures.append((runs[index], error))
        count = len(results) + len(outcome.failures)
        log(_progress_line(count, len(runs), runs[index], record, error, metric))

    if todo and ray_address is not None:
        _run_ray(todo, ray_address, done)
    elif todo:
        _run_processes(todo, workers, done)
    outcome.records = [results[i] for i in sorted(results)]
    return outcome
