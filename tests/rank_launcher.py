"""Start N local ranks of a script with the environment the deepspeed launcher gives them.

    python tests/rank_launcher.py --nproc 2 [--master_port P] SCRIPT ARGS...

Each rank runs `python -u SCRIPT --local_rank=R ARGS...` with RANK, LOCAL_RANK, WORLD_SIZE,
LOCAL_SIZE, CROSS_RANK, CROSS_SIZE, MASTER_ADDR and MASTER_PORT set as
`deepspeed --num_gpus N` sets them on one node (so DeepSpeed's shared-memory CPU all-reduce is
used just the same). The engine and conversion tests start their multi-rank runs with it:
`deepspeed` itself starts two Python processes that import deepspeed and torch (its runner,
then `deepspeed.launcher.launch`) before the first rank starts, and polls its ranks once a
second; this one imports neither. The deepspeed launcher itself is what tests/launch/ and the
README's commands run.

If a rank fails, the others are stopped and the launcher exits with that rank's status; SIGINT
and SIGTERM are passed on to every rank.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

from testutil import free_port  # this script's folder, tests/, is first on sys.path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nproc", type=int, required=True)
    p.add_argument("--master_port", type=int, default=0)
    p.add_argument("script")
    p.add_argument("args", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(a.master_port or free_port()),
               WORLD_SIZE=str(a.nproc), LOCAL_SIZE=str(a.nproc), CROSS_RANK="0", CROSS_SIZE="1")
    procs = [subprocess.Popen([sys.executable, "-u", a.script, f"--local_rank={r}", *a.args],
                              env=dict(env, RANK=str(r), LOCAL_RANK=str(r)))
             for r in range(a.nproc)]

    def forward(signum, _frame):
        for q in procs:
            if q.poll() is None:
                q.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    status = 0
    running = {q.pid: q for q in procs}
    while running:
        pid, raw = os.wait()
        q = running.pop(pid, None)
        if q is None:
            continue
        q.returncode = os.waitstatus_to_exitcode(raw)
        if q.returncode != 0 and status == 0:
            # A rank that failed leaves its peers blocked in a collective: stop them.
            status = q.returncode if q.returncode > 0 else 128 - q.returncode
            for other in running.values():
                other.terminate()
            for other in list(running.values()):
                try:
                    other.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    other.kill()
                    other.wait()
                running.pop(other.pid)
    return status


if __name__ == "__main__":
    sys.exit(main())
