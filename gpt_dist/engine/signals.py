"""Stop requests by signal, honoured from the first line of the process.

SIGUSR1 (SLURM's warning before the time limit), SIGTERM and SIGINT (Ctrl-C) ask training to
stop: the loop finishes its step, saves and exits 0 (SIGUSR1 inside SLURM also requeues). A
second Ctrl-C quits at once, without saving.

`install()` runs first thing in `gpt-dist` (gpt_dist.cli), so a signal during start-up (imports,
DeepSpeed's set-up, a resume) is recorded and acted on at the first step boundary, never lost
and never fatal. The window before it, the interpreter starting, is closed by the launchers:
they start their launcher with these signals blocked (`python -m gpt_dist.engine.signals CMD`),
the ranks inherit the blocked mask, and `install()` unblocks it, so a signal that came early is
pending and delivered to the handler then. (Ignoring the signal instead, `trap "" USR1`, would
be inherited too, and the ranks would never see it.)
"""

from __future__ import annotations

import os
import signal
import sys
import weakref
from typing import Any

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)
# What the launchers block for their children: SIGUSR1, which SLURM sends to every process of
# the step (the launcher itself must survive it). SIGTERM and SIGINT still stop a launcher.
LAUNCHER_BLOCKED = (signal.SIGUSR1,)

_pending: str | None = None  # received while no run was listening
# The run listening now. Weak: once a run's loop returns, its StopSignal is gone, and a signal
# that comes later is kept for the next run instead of being recorded on the finished one.
_current: weakref.ref[StopSignal] | None = None


def _handle(signum: int, frame: Any) -> None:  # noqa: ARG001
    global _pending
    name = signal.Signals(signum).name
    run = _current() if _current is not None else None
    already = run.name if run is not None else _pending
    if signum == signal.SIGINT and already is not None:
        raise KeyboardInterrupt  # a second Ctrl-C: quit now, without saving
    if run is not None:
        run.name = name
    else:
        _pending = name


def install() -> dict[int, Any]:
    """Record stop signals from now on (main thread only; idempotent), and unblock those a
    launcher blocked, delivering any that is pending. Returns the handlers it replaced."""
    previous = {sig: signal.signal(sig, _handle) for sig in STOP_SIGNALS}
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    return previous


def uninstall(previous: dict[int, Any]) -> None:
    """Give the signals back the handlers `install` returned (for commands that do not train);
    a stop requested meanwhile is delivered again, to them."""
    global _pending
    for sig, prev in previous.items():
        signal.signal(sig, prev)
    name, _pending = _pending, None
    if name is not None:
        os.kill(os.getpid(), signal.Signals[name])


class StopSignal:
    """The stop request of one training run: `name` is None, or the signal's name
    ("SIGUSR1", "SIGTERM", "SIGINT"), including one received before the run began."""

    def __init__(self) -> None:
        global _pending, _current
        install()
        self.name: str | None = _pending
        _pending = None
        _current = weakref.ref(self)


def exec_blocked(argv: list[str]) -> None:
    """Replace this process by `argv` with LAUNCHER_BLOCKED signals blocked (see the module
    docstring)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, LAUNCHER_BLOCKED)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python -m gpt_dist.engine.signals COMMAND [ARGS...]")
    exec_blocked(sys.argv[1:])
