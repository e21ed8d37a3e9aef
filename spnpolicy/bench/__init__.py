"""Benchmark harness: suites of (task, algorithm, seed) runs under one evaluation protocol,
parallel or Ray execution with skip and resume, bootstrap statistics, tables and plots.

```python
from spnpolicy.bench import get_suite, plan, run_all
from spnpolicy.bench.report import write_report
suite = get_suite("matrix")
outcome = run_all(plan(suite, "runs/bench/matrix", algos=["spn-ac"], seeds=3), workers=2)
summary, paths = write_report(outcome.records, "runs/bench/matrix", suite.name, suite.metric,
                              suite.task_names())
```

The command line: ``spnpolicy bench SUITE`` and ``spnpolicy plot RUN_DIRS``. Statistics
(``bench.stats``), reports (``bench.report``) and plots (``bench.plots``) are imported from
their modules, so that the command line does not load scipy and matplotlib to start.
"""

from spnpolicy.bench.records import RunRecord, find_run_dirs, load_run
from spnpolicy.bench.runner import BenchRun, Outcome, plan, run_all
from spnpolicy.bench.suites import SUITES, Protocol, Suite, Task, get_suite

__all__ = ["SUITES", "BenchRun", "Outcome", "Protocol", "RunRecord", "Suite", "Task",
           "find_run_dirs", "get_suite", "load_run", "plan", "run_all"]
