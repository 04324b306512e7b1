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
