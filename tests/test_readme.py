"""The README's code runs as written and prints what its comments say.

Each Python block of ``README.md`` is executed as a user would paste it (the training
blocks at their stated budgets, in a scratch working directory), and the values its
comments promise are checked; the ``spnpolicy query`` and ``spnpolicy evaluate`` commands
then run as subprocesses on the run the Python block trained.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spnpolicy.envs import registry

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def _block(marker: str) -> str:
    """The one Python block of the README that contains ``marker``."""
    found = [b for b in BLOCKS if marker in b]
    assert len(found) == 1, f"expected one README python block with {marker!r}, got {len(found)}"
    return found[0]


def _commands(prefix: str) -> list[list[str]]:
    """The README's shell lines that start with ``prefix``, split into arguments (comments
    dropped)."""
    lines = [line.split("#")[0].split() for line in README.splitlines()
             if line.startswith(prefix)]
    assert lines, f"no README line starts with {prefix!r}"
    return lines


def test_the_circuit_block_gives_the_stated_values():
    scope: dict = {}
    exec(_block("Categorical(var=0"), scope)
    c = scope["c"]
    with torch.no_grad():
        p = c.log_prob(torch.tensor([[2, 0], [1, -1]])).exp()
        assert torch.allclose(p, torch.tensor([0.1, 0.32]), atol=1e-6)
        assert c.marginals().shape == (2, 3)
        assert c.sample(5).shape == (5, 2)
        assert c.mpe(evidence=torch.tensor([0, -1])).tolist() == [0, 1]
        assert torch.isfinite(c.entropy())


def test_the_training_and_query_blocks_run_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    training: dict = {}
    block = _block('spnpolicy.train("spn-ac", "climbing"')
    climbing, coverage = block.split("\nresult = spnpolicy.train(\"spn-ac\", \"coverage\"")
    exec(climbing, training)
    result = training["result"]
    assert result.eval["success_rate"] == 1.0
    assert result.agent.act([[1.0]]).tolist() == [[0, 0]]
    assert tuple(result.agent.distribution([[1.0]]).batch_shape) == (1,)

    exec("import spnpolicy\nresult = spnpolicy.train(\"spn-ac\", \"coverage\"" + coverage, training)
    assert (tmp_path / "runs" / "cov" / "checkpoints" / "last.pt").is_file()

    query: dict = {}
    exec(_block("load_agent("), query)                       # reads runs/cov
    assert query["lost"].mode.shape == (1, 1)
    assert query["anomaly_scores"](query["agent"], query["states"],
                                   query["joint_actions"]).shape == (1, 2)

    cli = Path(sys.executable).parent / "spnpolicy"
    for argv in _commands(".venv/bin/spnpolicy query"):
        done = subprocess.run([str(cli), *argv[1:]], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        assert "most likely joint action" in done.stdout

    # the command line's evaluate reads its own run, runs/cov-cli, which is the same task
    # as the Python block's runs/cov; this test trains only the latter
    for argv in _commands(".venv/bin/spnpolicy evaluate"):
        argv = [arg.replace("runs/cov-cli", "runs/cov") for arg in argv]
        done = subprocess.run([str(cli), *argv[1:]], capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr
        record = json.loads(done.stdout)
        assert json.loads((tmp_path / argv[argv.index("--out") + 1]).read_text()) == record
        assert record["run"] == "runs/cov" and record["episodes"] == 200
        assert record["greedy"]["success_rate"] > record["uniform_random"]["success_rate"]


def test_the_own_env_block_trains_from_the_repository_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))                     # "from the repository root"
    monkeypatch.setattr(registry, "_REGISTERED", dict(registry._REGISTERED))  # undone after
    scope: dict = {}
    exec(_block("rendezvous"), scope)
    assert "success_rate" in scope["result"].eval
    assert registry.registered_envs()["rendezvous"] is scope["rendezvous"]


def test_the_own_env_command_trains_as_written(tmp_path):
    # it ran 3000 steps with the default learning_starts=5000: no update, and a warning
    block, = [b for b in re.findall(r"```bash\n(.*?)```", README, re.S)
              if "own_env.py:rendezvous" in b]
    argv = block.replace("\\\n", " ").split()
    assert argv[0] == ".venv/bin/spnpolicy"
    argv[argv.index("--out-dir") + 1] = str(tmp_path / "rendezvous")
    cli = Path(sys.executable).parent / "spnpolicy"
    done = subprocess.run([str(cli), *argv[1:], "--quiet"], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr, done.stderr
    metrics = (tmp_path / "rendezvous" / "metrics.jsonl").read_text()
    assert '"loss_critic"' in metrics                      # it updated


def test_each_training_example_writes_its_own_run_directory():
    # the Python and the command-line example once both wrote runs/cov: the second failed
    python = re.findall(r'out_dir="([^"]+)"', "".join(BLOCKS))
    lines = [line.split("#")[0].split()
             for block in re.findall(r"```bash\n(.*?)```", README, re.S)
             for line in block.replace("\\\n", " ").splitlines() if "spnpolicy train" in line]
    shell = [argv[argv.index("--out-dir") + 1] for argv in lines if "--resume" not in argv]
    resumed = [argv[argv.index("--out-dir") + 1] for argv in lines if "--resume" in argv]
    assert python and shell and resumed
    assert len(set(python + shell)) == len(python + shell), python + shell
    assert set(resumed) <= set(shell)


@pytest.mark.parametrize("argv", [["--help"], ["config", "spn-ac", "coverage"],
                                  ["bench", "--help"]])
def test_the_listed_commands_answer(argv):
    cli = Path(sys.executable).parent / "spnpolicy"
    done = subprocess.run([str(cli), *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


def test_the_matrix_example_prints_the_learned_joint_policy():
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "train_matrix.py")],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "greedy joint action: (0, 0)" in done.stdout
    rows = [line for line in done.stdout.splitlines() if line.strip().startswith("u0=")]
    probs = torch.tensor([[float(v) for v in row.split(":")[1].split()] for row in rows])
    assert probs.shape == (3, 3) and abs(float(probs.sum()) - 1.0) < 0.01
