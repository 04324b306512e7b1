"""`gpt-dist chat --model DIR`: an interactive multi-turn conversation through the model's chat
template. One line of input is one user message; the reply is printed as one block.
`/reset` starts over, `/exit` (or end of input) quits. Works with piped stdin too."""

from __future__ import annotations

import argparse

HELP = "chat with a fine-tuned model through its chat template (multi-turn, reads stdin)"


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
    import os
    import sys

    from gpt_dist.checkpoint.loader import load_model
    from gpt_dist.commands.generate import sampling_params
    from gpt_dist.errors import UserError
    from gpt_dist.finetune.chat_template import ChatTemplate
    from gpt_dist.generation.chat import ChatSession

    params = sampling_params(args)
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
    if interactive:
        print("Chatting with", args.model, "- /reset starts over, /exit quits.", file=sys.stderr)
    while True:
        if interactive:
            print("> ", end="", flush=True, file=sys.stderr)
        line = sys.stdin.readline()
        if not line:
            break
        text = line.strip()
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
        print(reply, flush=True)
        if session.last.finish_reason != "eot":
            print(f"(reply cut: {session.last.finish_reason})", file=sys.stderr)
    return 0
