"""`gpt-dist train-tokenizer`: train a SentencePiece or byte-level BPE tokenizer on raw text.

    gpt-dist train-tokenizer --input corpus/*.txt --kind sentencepiece --vocab-size 32000 --output tok/

The directory it writes is what `tokenizer: {kind: sentencepiece, path: tok/}` (or
`gpt-dist prepare --tokenizer sentencepiece --tokenizer-path tok/`) expects. The training itself
is gpt_dist.data.tokenizer_training.
"""

from __future__ import annotations

import argparse

HELP = "train a SentencePiece (bpe/unigram) or byte-level BPE tokenizer from text, with bounded memory"


def register(subparsers: argparse._SubParsersAction) -> None:
    from gpt_dist.data.tokenizer_training import TokenizerTrainingConfig as D

    p = subparsers.add_parser("train-tokenizer", help=HELP, description=HELP)
    p.add_argument("--input", nargs="+", required=True, metavar="PATH",
                   help="text files, folders or globs: .txt (a document per paragraph), .jsonl(.gz/.zst), .parquet")
    p.add_argument("--kind", choices=("sentencepiece", "bpe"), required=True, help="tokenizer kind")
    p.add_argument("--vocab-size", type=int, required=True, help="vocabulary size, special tokens included")
    p.add_argument("--output", required=True, help="directory to write (model file + gpt_dist_tokenizer.json)")
    p.add_argument("--model-type", choices=("bpe", "unigram"), default=D.model_type,
                   help=f"sentencepiece model type (default: {D.model_type})")
    p.add_argument("--no-byte-fallback", dest="byte_fallback", action="store_false",
                   help="sentencepiece: map unseen characters to <unk> instead of UTF-8 byte pieces")
    p.add_argument("--special-tokens", nargs="*", default=[], metavar="TOKEN",
                   help="extra tokens matched in text, e.g. chat markers (<|endoftext|> is always added)")
    p.add_argument("--max-token-length", type=int, default=D.max_token_length,
                   help=f"longest piece in characters (default: {D.max_token_length}; 4-8 suits Chinese)")
    p.add_argument("--input-sentence-size", type=int, default=D.input_sentence_size,
                   help=f"text pieces sampled for training; bounds memory (default: {D.input_sentence_size:,})")
    p.add_argument("--character-coverage", type=float, default=D.character_coverage,
                   help=f"sentencepiece: share of characters covered by pieces (default: {D.character_coverage})")
    p.add_argument("--sampling-alpha", type=float, default=D.sampling_alpha,
                   help="sentencepiece: > 0 enables subword sampling / BPE-dropout when `prepare` tokenizes "
                        "training text (e.g. 0.1); recorded in the tokenizer's settings")
    p.add_argument("--sampling-nbest-size", type=int, default=D.sampling_nbest_size,
                   help="sentencepiece unigram sampling: n-best size (-1 = all)")
    p.add_argument("--text-key", default=D.text_key, help="JSON field / parquet column with the text")
    p.add_argument("--seed", type=int, default=D.seed, help="seed of the sampling of training text")
    p.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gpt_dist.data.tokenizer_training import TokenizerTrainingConfig, train_tokenizer

    cfg = TokenizerTrainingConfig(
        kind=args.kind, vocab_size=args.vocab_size, model_type=args.model_type, byte_fallback=args.byte_fallback,
        special_tokens=list(args.special_tokens), max_token_length=args.max_token_length,
        input_sentence_size=args.input_sentence_size, character_coverage=args.character_coverage,
        sampling_alpha=args.sampling_alpha, sampling_nbest_size=args.sampling_nbest_size, text_key=args.text_key,
        seed=args.seed,
    )
    tok = train_tokenizer(args.input, args.output, cfg, overwrite=args.overwrite)
    s = tok.settings["training"]
    bad = ", ".join(f"{k} {v}" for k, v in s["bad_input"].items()) or "none"
    print(f"{args.output}: {tok.kind} tokenizer, {tok.vocab_size} tokens (end-of-text id {tok.eot_id}), "
          f"fingerprint {tok.fingerprint[:12]}; trained on {s['pieces_sampled']:,} of {s['pieces_seen']:,} "
          f"text pieces; bad input: {bad}")
    print(f"use it with: tokenizer: {{kind: {tok.kind}, path: {args.output}}}")
    return 0
