"""tools/pytest_cpu_seconds.py, the plugin docs/benchmarks.md's per-test CPU seconds come from."""

import json
import os
import subprocess
import sys

from testutil import REPO


def test_plugin_records_each_tests_wall_and_cpu_seconds_with_its_children(tmp_path):
    (tmp_path / "test_work.py").write_text(
        "import subprocess, sys\n"
        "def test_child():\n"
        "    subprocess.run([sys.executable, '-c', 'sum(range(30_000_000))'], check=True)\n"
        "def test_nothing():\n"
        "    pass\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_XDIST_WORKER", "PYTEST_ADDOPTS")}
    env.update(PYTHONPATH=str(REPO / "tools"), CPU_SECONDS_DIR=str(tmp_path / "out"))
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "pytest_cpu_seconds", "-p", "no:cacheprovider",
                        "test_work.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    rows = {name: (wall, cpu) for name, wall, cpu in json.loads((tmp_path / "out" / "main.json").read_text())}
    assert list(rows) == ["test_work.py::test_child", "test_work.py::test_nothing"]
    assert rows["test_work.py::test_child"][1] > 0.2 > rows["test_work.py::test_nothing"][1]  # the child's CPU counts
