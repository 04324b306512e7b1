"""A real two-node Slurm for the tests (tools/slurm_testbed.sh), and helpers to drive it.

The test bed installs Debian's Slurm and munge when missing and starts them as root. Where that
is impossible (not root, no apt-get) the SLURM tests skip and say why; with
GPT_DIST_REQUIRE_SLURM=1 (CI) they fail instead, so a broken install cannot pass unnoticed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[2]
TESTBED = REPO / "tools" / "slurm_testbed.sh"
BIN = Path(sys.executable).parent

# States after which a job does nothing more (a requeued job passes through PENDING instead).
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


@dataclass
class SlurmCluster:
    env: dict[str, str]  # the environment for client commands and jobs (SLURM_CONF set)

    def run(self, *cmd: str, check: bool = True, env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
        p = subprocess.run(list(cmd), env=env or self.env, capture_output=True, text=True, timeout=60, **kw)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        return p

    def sbatch(self, script: Path, args: list[str], options: list[str], env: dict[str, str] | None = None) -> int:
        """Submit from the repository root (as users do); returns the job id."""
        p = self.run("sbatch", "--parsable", *options, str(script), *args, env=env, cwd=REPO)
        return int(p.stdout.strip().split(";")[0])

    def job(self, job_id: int) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, Restarts, ExitCode, ...)."""
        out = self.run("scontrol", "-o", "show", "job", str(job_id)).stdout
        return dict(tok.split("=", 1) for tok in out.split() if "=" in tok)

    def wait_final(self, job_id: int, timeout: float, on_poll: Callable[[], None] | None = None) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.job(job_id)
            if info["JobState"] in FINAL_STATES:
                return info
            if on_poll is not None:
                on_poll()
            time.sleep(0.5)
        self.run("scancel", str(job_id), check=False)
        raise AssertionError(f"job {job_id} still {self.job(job_id)['JobState']} after {timeout:.0f} s; cancelled it")


def _unavailable(msg: str):
    if os.environ.get("GPT_DIST_REQUIRE_SLURM") == "1":
        pytest.fail(f"GPT_DIST_REQUIRE_SLURM=1 but {msg}")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def slurm() -> SlurmCluster:
    if not TESTBED.is_file():
        pytest.fail(f"{TESTBED} is missing")
    was_running = subprocess.run([str(TESTBED), "status"], capture_output=True).returncode == 0
    p = subprocess.run([str(TESTBED), "start"], capture_output=True, text=True, timeout=900)
    if p.returncode == 3:
        _unavailable(f"no Slurm test bed: {p.stderr.strip()}")
    if p.returncode != 0:
        pytest.fail(f"tools/slurm_testbed.sh start failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    conf = subprocess.run([str(TESTBED), "env"], capture_output=True, text=True, check=True).stdout.split("=", 1)[1].strip()
    cluster = SlurmCluster(env=dict(os.environ, SLURM_CONF=conf))
    yield cluster
    # Leave a test bed that was already up (a developer's, or another session's) as it was.
    if not was_running and not cluster.run("squeue", "-h", check=False).stdout.strip():
        subprocess.run([str(TESTBED), "stop"], capture_output=True)


