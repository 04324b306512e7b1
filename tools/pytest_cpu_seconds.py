"""A pytest plugin: each test's wall and CPU seconds, for finding where the suite's time goes.

    PYTHONPATH=tools PYTEST_ADDOPTS="-p pytest_cpu_seconds" CPU_SECONDS_DIR=OUT make test

writes OUT/<worker>.json (gw0, gw1 under xdist; "main" without it): a list of [test id, wall s,
CPU s], in the order the worker ran them. CPU seconds are this process's and those of the child
processes it waited for (the launched ranks and commands a test runs), user + system; a
module or session fixture's cost lands on the first test that uses it.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

import pytest

_rows: list[tuple[str, float, float]] = []


def _cpu_seconds() -> float:
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    wall, cpu = time.perf_counter(), _cpu_seconds()
    yield
    _rows.append((item.nodeid, round(time.perf_counter() - wall, 2), round(_cpu_seconds() - cpu, 2)))


def pytest_sessionfinish(session, exitstatus):
    out = Path(os.environ.get("CPU_SECONDS_DIR", "."))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}.json").write_text(json.dumps(_rows))
