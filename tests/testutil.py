"""Small helpers shared by test modules in several folders (tests/ is on sys.path through its
conftest.py)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the environment's console scripts: gpt-dist, deepspeed, torchrun


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a launcher's --master_port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_launcher(world: int, port: int | None = None) -> list[str]:
    """The start of a command that runs a script on `world` local ranks as
    `deepspeed --num_gpus WORLD --master_port PORT` does (tests/rank_launcher.py)."""
    return [sys.executable, str(REPO / "tests" / "rank_launcher.py"), "--nproc", str(world),
            "--master_port", str(port or free_port())]
