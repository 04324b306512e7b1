"""`gpt-dist convert`: gpt_dist checkpoints to and from Hugging Face GPT-2 or Llama directories.
The work is done by gpt_dist.conversion."""

from __future__ import annotations

import argparse

HELP = "convert checkpoints: to-hf (for transformers, TRL, vLLM, lm-eval) and from-hf (public weights)"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("convert", help=HELP, description=HELP)
    sub = p.add_subparsers(dest="direction", metavar="DIRECTION", required=True)

    to_hf = sub.add_parser(
        "to-hf",
        help="a gpt_dist checkpoint (any ZeRO stage, any world size) -> a Hugging Face GPT-2 (or, for model.arch: llama, Llama) directory",
        description="Write config.json, model.safetensors, generation_config.json, the tokenizer, the chat "
        "template (if any) and a model card. OUT_DIR appears only when complete.",
    )
    to_hf.add_argument(
        "ckpt_dir", metavar="CKPT_DIR", help="checkpoint directory (e.g. runs/NAME/ckpt) or a step_NNNNNNNN folder"
    )
    to_hf.add_argument("out_dir", metavar="OUT_DIR", help="new directory to write (must not exist, or be empty)")
    to_hf.add_argument(
        "--tag", default=None, help="checkpoint tag, e.g. step_00001000 (default: the latest complete one)"
    )
    to_hf.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="weight dtype (default: fp32)")
    to_hf.set_defaults(func=run_to_hf)

    from_hf = sub.add_parser(
        "from-hf",
        help="a Hugging Face GPT-2 or Llama directory -> a gpt_dist checkpoint for checkpoint.init_from",
        description="Write OUT_DIR/step_00000000/ (ZeRO-0 layout, gpt_dist.json, COMPLETE). "
        "OUT_DIR appears only when complete.",
    )
    from_hf.add_argument("hf_dir", metavar="HF_DIR", help="a save_pretrained directory of a GPT2LMHeadModel")
    from_hf.add_argument(
        "out_dir", metavar="OUT_DIR", help="new checkpoint directory to write (must not exist, or be empty)"
    )
    from_hf.set_defaults(func=run_from_hf)


def run_to_hf(args: argparse.Namespace) -> int:
    from gpt_dist.conversion import export_hf

    out = export_hf(args.ckpt_dir, args.out_dir, tag=args.tag, dtype=args.dtype)
    print(f"wrote {out}")
    return 0


def run_from_hf(args: argparse.Namespace) -> int:
    from gpt_dist.conversion import import_hf

    tag_dir = import_hf(args.hf_dir, args.out_dir)
    print(f"wrote {tag_dir}; train from it with checkpoint.init_from={args.out_dir}")
    return 0
