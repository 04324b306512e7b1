"""`gpt-dist generate --model CKPT_OR_HF_DIR --prompt TEXT [TEXT ...]`: continue prompts (or, with
--chat, answer them through the model's chat template), all prompts as one batch."""

from __future__ import annotations

import argparse

HELP = "generate text from a checkpoint or Hugging Face directory (KV cache, batched prompts)"


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    """The decoding flags shared by `generate` and `chat`."""
    p.add_argument("--max-new-tokens", type=int, default=128, help="tokens to generate at most (default: 128)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy; higher = more random (default: 0.8)")
    p.add_argument("--top-k", type=int, default=200, help="sample from the k most likely tokens; 0 = all (default: 200)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling: the smallest set with probability >= p")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help=">1 discourages repeating tokens (default: 1.0)")
    p.add_argument("--seed", type=int, default=None, help="seed for sampling (default: random)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="auto = bf16 on GPUs that support it, else fp32")


def sampling_params(args: argparse.Namespace):
    from gpt_dist.generation.token_sampling import SamplingParams

    return SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                          top_p=args.top_p, repetition_penalty=args.repetition_penalty, seed=args.seed).validate()


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("generate", help=HELP, description=HELP)
    p.add_argument("--model", required=True, metavar="CKPT_OR_HF_DIR",
                   help="a gpt_dist checkpoint dir (runs/NAME/ckpt), a step_NNNNNNNN folder or a Hugging Face directory")
    p.add_argument("--prompt", required=True, nargs="+", metavar="TEXT", help="one or more prompts, decoded as one batch")
    p.add_argument("--chat", action="store_true",
                   help="treat each prompt as a user message and answer it through the model's chat template")
    p.add_argument("--json", action="store_true", help="print one JSON object per prompt instead of plain text")
    p.add_argument("--no-cache", action="store_true", help=argparse.SUPPRESS)  # for checking the KV cache
    add_sampling_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from gpt_dist.checkpoint.model_loader import load_model
    from gpt_dist.errors import UserError
    from gpt_dist.generation.decoding import generate

    params = sampling_params(args)
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    tok = loaded.tokenizer
    if args.chat:
        from gpt_dist.finetune.chat_template import ChatTemplate

        if not loaded.chat_template:
            raise UserError(f"--chat: {args.model} has no chat template (it was not fine-tuned with one); drop --chat")
        template = ChatTemplate(loaded.chat_template, tok, origin=f"the chat template of {args.model}")
        ids = [template.encode([{"role": "user", "content": p}], train="none", add_generation_prompt=True).ids
               for p in args.prompt]
    else:
        ids = [tok.encode(p) for p in args.prompt]
    outputs = generate(loaded.model, ids, params, tok.eot_id, use_cache=not args.no_cache)
    for prompt, out in zip(args.prompt, outputs):
        text = tok.decode(out.tokens)
        if args.chat:
            text = text.strip()
        if args.json:
            print(json.dumps({"prompt": prompt, "text": text, "tokens": out.tokens, "finish_reason": out.finish_reason},
                             ensure_ascii=False))
        elif args.chat:
            print(text)
        else:
            print(prompt + text)
    return 0
