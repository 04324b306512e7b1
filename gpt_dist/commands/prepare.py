"""`gpt-dist prepare`: raw text -> filtered, deduplicated, tokenized WebDataset shards.

    gpt-dist prepare --sample --output data/sample          # the built-in sample corpus
    gpt-dist prepare configs/data/example.yaml               # the full pipeline from a config
    gpt-dist prepare --input raw/*.jsonl.gz --output data/x  # the simple case, from flags

The work itself is gpt_dist.data.prepare.run_prepare.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

HELP = "clean, deduplicate, tokenize and pack text into WebDataset shards (train/ and val/)"

# The built-in sample: pydoc's topic texts, GPT-2 tokens, windows for the `mini` preset.
# configs/data/sample.yaml is the same as a config file.
SAMPLE_OVERRIDES: dict[str, Any] = {
    "sources": [{"name": "pydoc", "path": "pydoc_data.topics", "format": "sample"}],
    "tokenizer": {"kind": "gpt2"},
    "seq_len": 256,
    "val_fraction": 0.1,
    "shard_tokens": 1 << 16,
    "language": {"keep": ["en"]},
    # Help texts are full of code: English prose heuristics would drop most of them.
    "quality": {"enabled": False},
    # A small corpus: one task, in this process (no worker processes to start).
    "executor": {"tasks": 1},
}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("prepare", help=HELP, description=HELP)
    p.add_argument("config", nargs="?", help="prepare config YAML (see configs/data/); flags below override it")
    p.add_argument("--sample", action="store_true", help="use the built-in sample corpus (pydoc topics), seq_len 256")
    p.add_argument("--input", nargs="+", metavar="PATH", help="input files, folders or globs (one source each)")
    p.add_argument("--text-key", help="JSON field / parquet column holding the text (default: text)")
    p.add_argument("--txt-unit", choices=("file", "paragraph", "line"),
                   help=".txt inputs: one document per file (default), per blank-line paragraph, or per line")
    p.add_argument("--output", help="output folder; train/ and val/ shard sets are written inside")
    p.add_argument("--tokenizer", choices=("gpt2", "sentencepiece", "bpe"), help="tokenizer kind (default: gpt2)")
    p.add_argument("--tokenizer-path", help="gpt2: a .tiktoken file; others: a `train-tokenizer` directory")
    p.add_argument("--seq-len", type=int, help="tokens per training sequence (each sample stores seq_len + 1)")
    p.add_argument("--val-fraction", type=float, help="fraction of documents for the validation split")
    p.add_argument("--executor", choices=("local", "slurm"), help="run here, or submit one sbatch array per job")
    p.add_argument("--tasks", type=int, help="parallel tasks per job (input files are dealt to them)")
    p.add_argument("--workers", type=int, help="tasks running at once")
    p.add_argument("--strict", action="store_true", help="fail on the first bad input record instead of counting it")
    p.add_argument("--overwrite", action="store_true", help="replace an output folder made by another configuration")
    p.add_argument("--json", action="store_true", help="print the manifests' summary as JSON")
    # SUPPRESS: `gpt-dist -v prepare` sets the same flag; a default here would clear it.
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="show datatrove's own logs (pipelines, per-job statistics); by default they go to "
                        "OUTPUT/.prepare/logs/console.log")
    p.set_defaults(func=run)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The nested config dict that the flags stand for."""
    from gpt_dist.errors import UserError

    o: dict[str, Any] = {}
    if args.sample:
        if args.config or args.input:
            raise UserError("--sample builds the built-in sample; give either --sample, a CONFIG or --input")
        o.update({k: (dict(v) if isinstance(v, dict) else v) for k, v in SAMPLE_OVERRIDES.items()})
    if args.input:
        names: list[str] = []
        sources = []
        for path in args.input:
            stem = Path(path.rstrip("/")).name.split(".")[0].replace("*", "") or "input"
            name, k = stem, 1
            while name in names:
                k += 1
                name = f"{stem}{k}"
            names.append(name)
            src = {"name": name, "path": path}
            if args.text_key:
                src["text_key"] = args.text_key
            if args.txt_unit:
                src["txt_unit"] = args.txt_unit
            sources.append(src)
        o["sources"] = sources
    for flag, key in (("output", "output"), ("seq_len", "seq_len"), ("val_fraction", "val_fraction")):
        if getattr(args, flag) is not None:
            o[key] = getattr(args, flag)
    if args.strict:
        o["strict"] = True
    tok = o.setdefault("tokenizer", {})
    if args.tokenizer:
        tok["kind"] = args.tokenizer
    if args.tokenizer_path:
        tok["path"] = args.tokenizer_path
    ex = o.setdefault("executor", {})
    for flag in ("executor", "tasks", "workers"):
        if getattr(args, flag) is not None:
            ex["kind" if flag == "executor" else flag] = getattr(args, flag)
    return o


def run(args: argparse.Namespace) -> int:
    import json

    from gpt_dist.commands.inspect import summary_dict, summary_text
    from gpt_dist.data.prepare import CONSOLE_LOG, WORK_DIR, run_prepare
    from gpt_dist.data.prepare_config import load_prepare_config

    cfg = load_prepare_config(args.config, overrides_from_args(args))
    result = run_prepare(cfg, overwrite=args.overwrite, console_log=not getattr(args, "verbose", False))
    log = logging.getLogger("gpt_dist.prepare")
    if result.status == "submitted":
        print(f"submitted {len(result.job_ids)} sbatch arrays (one per job), last job {result.job_ids[-1]}; "
              f"when it finishes, {result.output}/train/manifest.json exists: check it with "
              f"`gpt-dist inspect {result.output}`. Re-running this command resumes unfinished tasks.")
        return 0
    if result.status == "complete":
        log.info("%s was already complete; nothing was recomputed", result.output)
    if args.json:
        print(json.dumps({s: summary_dict(m) for s, m in result.manifests.items()}, indent=2))
    else:
        for split, m in result.manifests.items():
            print(summary_text(m, Path(result.output) / split))
        console = Path(result.output) / WORK_DIR / "logs" / CONSOLE_LOG
        if result.status == "done" and console.is_file():
            print(f"datatrove's own logs: {console} (--verbose shows them here)")
    return 0
