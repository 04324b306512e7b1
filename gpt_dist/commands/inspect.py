"""`gpt-dist inspect DIR`: what a shard set holds (manifest summary) and one decoded sample.

DIR is a shard set (DIR/manifest.json) or a `gpt-dist prepare` output folder (its train/ and
val/ are shown). `--verify` checks every shard's size and sha256 against the manifest.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HELP = "summarise a shard set (shards, tokens, tokenizer, filter statistics) and decode one sample"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("inspect", help=HELP, description=HELP)
    p.add_argument("dir", help="a shard set (with manifest.json) or a `gpt-dist prepare` output folder")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--verify", action="store_true", help="check every shard's sha256 (reads all data)")
    p.add_argument("--sample", type=int, default=0, metavar="I", help="which sample to decode (default: 0)")
    p.add_argument("--chars", type=int, default=600, help="characters of decoded text to show (default: 600)")
    p.set_defaults(func=run)


def summary_dict(m) -> dict[str, Any]:
    return {
        "split": m.split, "shards": len(m.shards), "sequences": m.sequences, "tokens": m.tokens,
        "seq_len": m.seq_len, "dtype": m.dtype, "tokenizer": m.tokenizer, "sources": m.sources,
        "filters": m.filters, "bad_input": m.bad_input, "created": m.created,
    }


def summary_text(m, where: Path) -> str:
    t = m.tokenizer
    lines = [
        f"{where}: {len(m.shards)} shards, {m.sequences:,} sequences x {m.seq_len + 1} tokens = {m.tokens:,} tokens "
        f"({m.dtype}), seq_len {m.seq_len}",
        f"  tokenizer: {t['kind']}{' ' + t['path'] if t.get('path') else ''} (vocab {t['vocab_size']}, "
        f"eot {t['eot_id']}, fingerprint {t['fingerprint'][:12]})",
        "  sources:",
    ]
    for name, s in m.sources.items():
        bad = sum(s.get("bad_input", {}).values())
        lines.append(
            f"    {name}: {s['documents_read']:,} read, {bad:,} bad input, {s['after_filters']:,} after filters, "
            f"{s['after_dedup']:,} after dedup; in {m.split}: {s['documents']:,} documents, {s['tokens']:,} tokens"
        )
    bad = ", ".join(f"{k} {v:,}" for k, v in sorted(m.bad_input.items())) or "none"
    lines.append(f"  bad input: {bad}")
    lines.append("  filters:")
    for name, f in m.filters.items():
        reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(f["reasons"].items(), key=lambda kv: -kv[1])[:6])
        lines.append(f"    {name}: {f['in']:,} in, {f['kept']:,} kept, {f['dropped']:,} dropped"
                     + (f" ({reasons})" if reasons else ""))
    return "\n".join(lines)


def decode_sample(split_dir: Path, m, index: int, chars: int) -> dict[str, Any]:
    """Sample `index` of the shard set: its first tokens and, when the tokenizer loads, its text."""
    import numpy as np

    from gpt_dist.data.shards import read_tokens
    from gpt_dist.data.tokenizer import load_tokenizer, tokenizer_config_from_spec
    from gpt_dist.errors import DataError, UserError

    counts = np.cumsum([s.sequences for s in m.shards])
    if not 0 <= index < m.sequences:
        raise DataError(f"--sample {index}: the shard set has {m.sequences} samples (0..{m.sequences - 1})")
    k = int(np.searchsorted(counts, index, side="right"))
    local = index - (int(counts[k - 1]) if k else 0)
    rec = m.shards[k]
    tokens = read_tokens(split_dir / rec.name, rec, m.seq_len, m.dtype, verify=False)[local]
    out: dict[str, Any] = {"shard": rec.name, "index": index, "tokens": tokens[:16].tolist()}
    try:
        tok = load_tokenizer(tokenizer_config_from_spec(m.tokenizer))
        if tok.fingerprint != m.tokenizer["fingerprint"]:
            out["text_error"] = f"the tokenizer at {tok.path} is not the one the shards were made with"
        else:
            out["text"] = tok.decode(tokens.tolist())[:chars]
    except UserError as e:
        out["text_error"] = f"tokenizer not available here ({e})"
    return out


def verify_shards(split_dir: Path, m) -> list[str]:
    """Problems found (empty when every shard matches its size and sha256)."""
    from gpt_dist.data.shards import read_tokens
    from gpt_dist.errors import DataError

    problems = []
    for rec in m.shards:
        try:
            read_tokens(split_dir / rec.name, rec, m.seq_len, m.dtype, verify=True)
        except DataError as e:
            problems.append(str(e))
    return problems


def run(args: argparse.Namespace) -> int:
    from gpt_dist.data.shards import MANIFEST, read_manifest
    from gpt_dist.errors import DataError

    root = Path(args.dir)
    if (root / MANIFEST).is_file():
        splits = [root]
    else:
        splits = [root / s for s in ("train", "val") if (root / s / MANIFEST).is_file()]
        if not splits:
            read_manifest(root, key="inspect DIR")  # raises the explanatory error
    report: dict[str, Any] = {}
    failed = False
    for d in splits:
        m = read_manifest(d, key="inspect DIR")
        entry = summary_dict(m)
        entry["sample"] = decode_sample(d, m, args.sample, args.chars)
        if args.verify:
            entry["verify_problems"] = verify_shards(d, m)
            failed |= bool(entry["verify_problems"])
        report[str(d)] = entry
        if not args.json:
            print(summary_text(m, d))
            s = entry["sample"]
            print(f"  sample {s['index']} ({s['shard']}), first tokens {s['tokens']}:")
            if "text" in s:
                print("    " + s["text"].replace("\n", "\n    "))
            else:
                print(f"    (no text: {s['text_error']})")
            if args.verify:
                print("  verify: " + ("all shards match their sha256" if not entry["verify_problems"]
                                      else "\n    ".join(["PROBLEMS:"] + entry["verify_problems"])))
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    if failed:
        raise DataError(f"{root}: some shards failed verification (listed above); restore or rebuild them")
    return 0
