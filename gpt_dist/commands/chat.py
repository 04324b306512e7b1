"""`gpt-dist chat --model DIR`: an interactive multi-turn conversation through the model's chat
template. One line of input is one user message; the reply is printed as one block.
`/reset` starts over, `/exit` (or end of input) quits. Works with piped stdin too.

On a terminal the turns are labelled ("you> " prompts, "assistant> " replies) and log lines are
held back below warnings (--verbose shows them); when stdout is a pipe or a file each reply is
one plain line, for scripts."""

from __future__ import annotations

import argparse

HELP = "chat with a fine-tuned model through its chat template (multi-turn, reads stdin)"
USER_LABEL = "you> "
ASSISTANT_LABEL = "assistant> "


def register(subparsers: argparse._SubParsersAction) -> None:
    from gpt_dist.commands.generate import add_sampling_args

    p = subparsers.add_parser("chat", help=HELP, description=HELP)
    p.add_argument("--model", required=True, metavar="DIR",
                   help="a fine-tuned gpt_dist checkpoint dir or a Hugging Face directory with a chat template")
    p.add_argument("--system", default=None, help="a system message to start the conversation with")
    p.add_argument("--chat-template", default=None, metavar="FILE",
                   help="a Jinja chat template to use instead of the model's own")
    add_sampling_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from gpt_dist.commands.generate import sampling_params

    params = sampling_params(args)
    root = logging.getLogger()
    level = root.level
    if not getattr(args, "verbose", False):
        # INFO lines (the attention kernel chosen, ...) would land between the turns.
        root.setLevel(logging.WARNING)
    try:
        return _converse(args, params)
    finally:
        root.setLevel(level)


def _converse(args, params) -> int:
    import os
    import sys

    from gpt_dist.checkpoint.model_loader import load_model
    from gpt_dist.errors import UserError
    from gpt_dist.finetune.chat_template import ChatTemplate
    from gpt_dist.generation.chat import ChatSession

    source = origin = None
    if args.chat_template:  # checked before the model is loaded
        if not os.path.isfile(args.chat_template):
            raise UserError(f"--chat-template {args.chat_template}: no such file; give a Jinja chat template file")
        with open(args.chat_template, encoding="utf-8") as f:
            source, origin = f.read(), f"--chat-template {args.chat_template}"
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    if source is None:
        if not loaded.chat_template:
            raise UserError(
                f"--model {args.model}: no chat template saved with it (not fine-tuned with stage: sft?); "
                "pass --chat-template FILE, or use `gpt-dist generate` for plain continuation"
            )
        source, origin = loaded.chat_template, f"the chat template of {args.model}"
    session = ChatSession(loaded.model, ChatTemplate(source, loaded.tokenizer, origin), params, system=args.system)
    interactive = sys.stdin.isatty()
    labels = interactive or sys.stdout.isatty()
    if interactive:
        print("Chatting with", args.model, "- /reset starts over, /exit quits.", file=sys.stderr)
    while True:
        if interactive:
            print(USER_LABEL, end="", flush=True, file=sys.stderr)
        line = sys.stdin.readline()
        if not line:
            break
        text = line.strip()
        if labels and not interactive and text:
            print(f"{USER_LABEL}{text}", flush=True)  # piped input onto a terminal: show what was sent
        if not text:
            continue
        if text == "/exit":
            break
        if text == "/reset":
            session.reset()
            print("(conversation cleared)", file=sys.stderr)
            continue
        try:
            reply = session.reply(text)
        except UserError as e:
            print(f"gpt-dist chat: {e}", file=sys.stderr)
            continue
        print(f"{ASSISTANT_LABEL}{reply}" if labels else reply, flush=True)
        if not reply:
            print("(empty reply: the model ended its turn at once)", file=sys.stderr)
        if session.last.finish_reason != "eot":
            print(f"(reply cut: {session.last.finish_reason})", file=sys.stderr)
    return 0
