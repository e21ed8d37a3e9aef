"""Where a figure was measured or a run trained: the machine and the git commit."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

__all__ = ["cpu_model", "git_commit", "machine", "training_provenance"]

_ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo where there is one, else platform's answer."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(*paths: str) -> str | None:
    """The package checkout's short commit, ``+dirty`` when ``paths`` (default: anything)
    differ from it; None outside a git checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=_ROOT,
                                capture_output=True, text=True, timeout=10, check=True)
        changes = subprocess.run(["git", "status", "--porcelain", "--", *paths], cwd=_ROOT,
                                 capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip() + ("+dirty" if changes.stdout.strip() else "")


def machine(**extra: Any) -> dict[str, Any]:
    """Platform, CPU model and count, Python, numpy and torch versions, torch threads, and
    the load average where the OS has one; ``extra`` entries are added."""
    import numpy as np
    import torch

    info = {"platform": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "numpy": np.__version__,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    return info | extra


def training_provenance(step: int) -> dict[str, Any]:
    """What trains a run from env step ``step`` on: the package's ``commit`` (as
    :func:`git_commit`), the UTC start time, the host, CPU model, Python and torch version."""
    import torch

    return {"step": int(step), "commit": git_commit(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host": platform.node(), "cpu": cpu_model(), "python": platform.python_version(),
            "torch": torch.__version__}
