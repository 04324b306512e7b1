"""The `gpt-dist` command: parses arguments and calls library functions, nothing more.

Each subcommand lives in gpt_dist/commands/<name>.py with `register(subparsers)`, which adds
its parser and sets `func` to a function taking the parsed args and returning an exit code.
Heavy imports (torch, deepspeed) happen inside those functions so `gpt-dist --help` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from gpt_dist.console import setup as setup_console
from gpt_dist.engine import signals
from gpt_dist.errors import UserError

# Order here is the order in `gpt-dist --help`.
COMMANDS = [
    "plan",
    "train_tokenizer",
    "prepare",
    "inspect",
    "train",
    "convert",
    "eval",
    "bench",
    "generate",
    "chat",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpt-dist", description="Distributed GPT-2 training with DeepSpeed ZeRO.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    # The deepspeed launcher puts --local_rank=N before the subcommand; LOCAL_RANK says the same.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"gpt_dist.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # First: a stop signal during start-up (imports, DeepSpeed's set-up) must be recorded.
    previous = signals.install()
    args = build_parser().parse_args(argv)
    if args.command != "train":
        signals.uninstall(previous)
    setup_console(args.verbose)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"gpt-dist {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
