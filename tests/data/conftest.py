"""Fixtures of the data tests: the README's sample run, shared by every test that needs shards."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_helpers import run_cli


@pytest.fixture(scope="session")
def readme_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("readme")


@pytest.fixture(scope="session")
def sample_data(readme_dir: Path) -> Path:
    """The README's first command, run once per session: `gpt-dist prepare --sample --output data/sample`."""
    assert run_cli("prepare", "--sample", "--output", "data/sample", cwd=readme_dir) == 0
    return readme_dir / "data" / "sample"


@pytest.fixture(scope="session")
def slurm_conf() -> str:
    """SLURM_CONF of the real Slurm test bed (tools/slurm_testbed.sh), started if needed.

    Skips where Slurm cannot be installed (not root, no apt-get), unless GPT_DIST_REQUIRE_SLURM=1.
    """
    import os
    import subprocess

    testbed = Path(__file__).resolve().parents[2] / "tools" / "slurm_testbed.sh"
    was_running = subprocess.run([str(testbed), "status"], capture_output=True).returncode == 0
    p = subprocess.run([str(testbed), "start"], capture_output=True, text=True, timeout=900)
    if p.returncode == 3:
        if os.environ.get("GPT_DIST_REQUIRE_SLURM") == "1":
            pytest.fail(f"GPT_DIST_REQUIRE_SLURM=1 but no Slurm test bed: {p.stderr.strip()}")
        pytest.skip(f"no Slurm test bed: {p.stderr.strip()}")
    assert p.returncode == 0, f"tools/slurm_testbed.sh start failed:\n{p.stdout}\n{p.stderr}"
    conf = subprocess.run([str(testbed), "env"], capture_output=True, text=True, check=True).stdout.split("=", 1)[1].strip()
    yield conf
    env = dict(os.environ, SLURM_CONF=conf)
    if not was_running and not subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True).stdout.strip():
        subprocess.run([str(testbed), "stop"], capture_output=True)
