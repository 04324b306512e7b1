#!/usr/bin/env python
"""Token efficiency: how many of the GPT-2 baseline's tokens a llama-style recipe needs to reach
the baseline's final validation loss, at the same width, depth, batch and token budget.

Every step goes through the user-facing commands, one subprocess each:

    corpus    the running interpreter's standard library (.py files, test folders left out,
              sorted by path; optionally pydoc's topic texts), one JSON line per file
    tokenizer gpt-dist train-tokenizer --kind sentencepiece --vocab-size 4096
    shards    gpt-dist prepare (validation = a seeded share of the files, held out whole)
    runs      gpt-dist train, one run directory per recipe; the curve is the run's
              metrics.jsonl validation rows (tokens, loss)

and writes OUT/token_efficiency.json (every run's curve, its config and seconds, the fraction),
OUT/token_efficiency.md (a table of the runs) and OUT/token_efficiency.png (validation loss
against tokens).

    python tools/bench_token_efficiency.py --out /tmp/tokeff --runs list      # what each run is
    python tools/bench_token_efficiency.py --out /tmp/tokeff                  # every run but sweeps
    python tools/bench_token_efficiency.py --out /tmp/tokeff --runs baseline recipe
    python tools/bench_token_efficiency.py --out /tmp/tokeff --tiny           # plumbing only

A finished run (OUT/runs/NAME/bench_result.json) is not trained again, so runs can be added one
at a time; the report is rebuilt from every finished run each time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

BIN = Path(sys.executable).parent
SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}


@dataclass(frozen=True)
class Scale:
    """The shapes and budget every run shares (the comparison holds these fixed)."""

    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    seq_len: int = 256
    micro_batch_size: int = 8
    batch_seqs: int = 8  # sequences per optimizer step
    max_steps: int = 120
    eval_every: int = 15
    sweep_steps: int = 45  # the learning-rate sweeps' shorter budget (a multiple of eval_every)
    eval_batches: int = 4
    vocab_size: int = 4096
    corpus_chars: int | None = None  # None = the whole standard library
    corpus_files: int | None = None
    prepare_tasks: int = 2  # gpt-dist prepare's executor.tasks
    # False: the runs start with TORCH_COMPILE_DISABLE=1, so DeepSpeed's Muon runs its
    # Newton-Schulz step eagerly instead of compiling it first (seconds of inductor work, a
    # large part of a tiny run); the compiled update is what tests/engine/test_muon.py trains with.
    torch_compile: bool = True

    @property
    def batch_tokens(self) -> int:
        return self.batch_seqs * self.seq_len


FULL = Scale()
TINY = Scale(n_layer=2, n_embd=32, n_head=2, seq_len=64, micro_batch_size=4, batch_seqs=4, max_steps=4,
             eval_every=2, sweep_steps=2, eval_batches=2, vocab_size=512, corpus_chars=200_000, corpus_files=40,
             prepare_tasks=1, torch_compile=False)


def _model(scale: Scale, arch: str, **kw: Any) -> dict[str, Any]:
    m = dict(arch=arch, n_layer=scale.n_layer, n_embd=scale.n_embd, n_head=scale.n_head, block_size=scale.seq_len,
             vocab_size=scale.vocab_size, vocab_pad_multiple=64, attn_impl="sdpa")
    if arch == "llama":
        # 8/3 n_embd rounded up to a multiple of 32 (n_embd 128: 352), so the SwiGLU's three
        # matrices hold about as many weights as GPT-2's two 4x ones (3% more), and with
        # multi-head attention (n_kv_head = n_head) the blocks are the same size.
        m.update(n_kv_head=scale.n_head, mlp_multiple=32)
    m.update(kw)
    return m


def _adamw_cosine(lr: float) -> dict[str, Any]:
    return dict(optimizer="adamw", schedule="cosine", lr=lr, min_lr=lr / 10, warmup_fraction=0.05, grad_clip=1.0)


def _muon_wsd(lr: float, muon_lr: float) -> dict[str, Any]:
    return dict(optimizer="muon", schedule="wsd", lr=lr, muon_lr=muon_lr, min_lr=lr / 10, warmup_fraction=0.05,
                decay_fraction=0.3, grad_clip=0.0)


BASELINE_LR = 2e-3  # the best of the sweep_baseline_ runs (docs/benchmarks.md)
RECIPE_LR, RECIPE_MUON_LR = 3e-3, 0.02


def run_specs(scale: Scale, baseline_lr: float = BASELINE_LR) -> dict[str, dict[str, Any]]:
    """name -> {model, train, what}: the baseline, the recipe, each lever on top of the recipe,
    both again with another seed, and the learning-rate sweeps (prefixed sweep_, at Scale.sweep_steps)."""
    base = {"model": _model(scale, "gpt2"), "train": _adamw_cosine(baseline_lr),
            "what": "GPT-2 block (LayerNorm, learned positions, GELU MLP, biases) + AdamW + cosine"}
    recipe = {"model": _model(scale, "llama"), "train": _muon_wsd(RECIPE_LR, RECIPE_MUON_LR),
              "what": "llama block (RMSNorm, RoPE, SwiGLU, no biases) + Muon + WSD"}
    specs = {"baseline": base, "recipe": recipe}
    levers = {
        "qk_norm": (dict(qk_norm=True), "recipe + QK-norm"),
        "untied": (dict(tie_embeddings=False), "recipe + untied LM head"),
        "zero_init": (dict(zero_init_proj=True), "recipe + zero-initialised output projections"),
    }
    for name, (kw, what) in levers.items():
        specs[f"recipe+{name}"] = {"model": {**recipe["model"], **kw}, "train": recipe["train"], "what": what}
    # The same two with another seed (initialisation and sample order): the spread to read the
    # differences between runs against.
    for name in ("baseline", "recipe"):
        r = specs[name]
        specs[f"{name}_seed2"] = {**r, "train": {**r["train"], "seed": 2}, "what": r["what"] + ", seed 2"}
    short = scale.sweep_steps
    for lr in (1e-3, 2e-3, 4e-3, 8e-3):
        specs[f"sweep_baseline_lr{lr:g}"] = {"model": base["model"], "train": _adamw_cosine(lr), "steps": short,
                                             "what": f"baseline at lr {lr:g}, {short} steps"}
    for mlr in (0.01, 0.02, 0.04):
        specs[f"sweep_recipe_muon{mlr:g}"] = {"model": recipe["model"], "train": _muon_wsd(RECIPE_LR, mlr),
                                              "steps": short, "what": f"recipe at muon_lr {mlr:g}, {short} steps"}
    return specs


# ----------------------------------------------------------------------------- the curves


def tokens_to_reach(curve: list[tuple[float, float]], target: float) -> float | None:
    """Tokens at which a validation curve [(tokens, loss), ...] (ascending tokens) first reaches
    `target`, linearly interpolated between the two eval points around the crossing; None if
    it never gets there. A curve already at or below the target at its first point: that point."""
    prev: tuple[float, float] | None = None
    for tok, loss in curve:
        if loss <= target:
            if prev is None or prev[1] == loss:
                return float(tok)
            t0, l0 = prev
            return t0 + (l0 - target) / (l0 - loss) * (tok - t0)
        prev = (tok, loss)
    return None


def token_fraction(baseline: list[tuple[float, float]], other: list[tuple[float, float]]) -> float | None:
    """The share of the baseline's tokens `other` needs to reach the baseline's final loss."""
    b_tokens, b_loss = baseline[-1]
    reached = tokens_to_reach(other, b_loss)
    return None if reached is None else reached / b_tokens


def read_curve(metrics: Path) -> list[tuple[float, float]]:
    """The validation rows of a run's metrics.jsonl as (tokens, loss), in step order."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return [(float(r["tokens"]), float(r["loss"])) for r in rows if r.get("split") == "val"]


# ----------------------------------------------------------------------------- the steps


NICE = 10  # the benchmark shares its machine: it yields the cores to interactive work (--nice)


def sh(args: list[str], log: Path, cwd: Path | None = None, **env_vars: str) -> float:
    """Run a gpt-dist command under `nice -n NICE` with `env_vars` added to its environment, its
    output to `log`; seconds taken. Fails loudly."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"), **env_vars)
    cmd = ["nice", "-n", str(NICE), str(BIN / args[0]), *args[1:]]
    t0 = time.time()
    with open(log, "w") as f:
        f.write(" ".join(cmd) + "\n")
        f.flush()
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed (exit {p.returncode}); see {log}:\n" + log.read_text()[-3000:])
    return time.time() - t0


def build_corpus(out: Path, scale: Scale, pydoc: bool) -> Path:
    """OUT/corpus/stdlib.jsonl: one document per standard-library .py file, sorted by path."""
    path = out / "corpus" / "stdlib.jsonl"
    if path.exists():
        return path
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(f for f in root.rglob("*.py") if not SKIP_DIRS & set(f.relative_to(root).parts[:-1]))
    if scale.corpus_files is not None:
        files = files[: scale.corpus_files]
    docs, chars = [], 0
    for f in files:
        text = f.read_text(encoding="utf-8", errors="replace")
        if scale.corpus_chars is not None and chars + len(text) > scale.corpus_chars:
            continue
        docs.append({"id": str(f.relative_to(root)), "text": text})
        chars += len(text)
    if pydoc:
        from pydoc_data.topics import topics

        docs += [{"id": f"pydoc:{k}", "text": topics[k]} for k in sorted(topics)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(d) + "\n" for d in docs))
    tmp.rename(path)
    return path


def build_shards(out: Path, scale: Scale, corpus: Path) -> tuple[Path, Path, dict[str, float]]:
    """The tokenizer directory and the shard folder (train/ and val/), and their seconds."""
    tok, data = out / "tokenizer", out / "data"
    seconds: dict[str, float] = {}
    if not (tok / "gpt_dist_tokenizer.json").exists():
        seconds["train_tokenizer"] = sh(["gpt-dist", "train-tokenizer", "--input", str(corpus), "--kind",
                                         "sentencepiece", "--vocab-size", str(scale.vocab_size), "--output",
                                         str(tok), "--overwrite"], out / "train_tokenizer.log")
    if not (data / "val").is_dir():
        prep = {
            "output": str(data), "seq_len": scale.seq_len, "val_fraction": 0.05, "shard_tokens": 262144,
            "tokenizer": {"kind": "sentencepiece", "path": str(tok)},
            "sources": [{"name": "stdlib", "path": str(corpus)}],
            # Source code: English-prose language and quality heuristics would drop most files,
            # and text normalisation would rewrite code.
            "normalize": {"enabled": False}, "language": {"enabled": False}, "quality": {"enabled": False},
            "minhash": {"enabled": False}, "executor": {"tasks": scale.prepare_tasks},
        }
        (out / "prepare.yaml").write_text(yaml.safe_dump(prep, sort_keys=False))
        seconds["prepare"] = sh(["gpt-dist", "prepare", str(out / "prepare.yaml"), "--overwrite"], out / "prepare.log")
    return tok, data, seconds


def train_config(out: Path, scale: Scale, name: str, spec: dict[str, Any], tok: Path, data: Path) -> dict[str, Any]:
    steps = spec.get("steps", scale.max_steps)
    return {
        "stage": "pretrain",
        "run_dir": str(out / "runs" / name),
        "model": spec["model"],
        "tokenizer": {"kind": "sentencepiece", "path": str(tok)},
        "data": {"train": [{"path": str(data / "train"), "weight": 1.0}], "val": str(data / "val"), "num_workers": 0},
        "train": {"global_batch_tokens": scale.batch_tokens, "micro_batch_size": scale.micro_batch_size,
                  "seq_len": scale.seq_len, "max_steps": steps, "weight_decay": 0.1, "precision": "fp32",
                  "seed": 1234, **spec["train"]},
        # ZeRO-1 for every run: DeepSpeed's Muon needs ZeRO >= 1, and one engine keeps the comparison fair.
        "engine": {"zero_stage": 1},
        "checkpoint": {"every_steps": steps, "keep_last": 1, "resume": "never"},
        "log": {"every_steps": scale.eval_every, "progress_bar": False, "wandb": {"mode": "disabled"}},
        "eval": {"every_steps": scale.eval_every, "batches": scale.eval_batches},
    }


def train(out: Path, scale: Scale, name: str, spec: dict[str, Any], tok: Path, data: Path) -> dict[str, Any]:
    """Train one run (unless its last eval is already there); its curve and seconds."""
    cfg = train_config(out, scale, name, spec, tok, data)
    run_dir = Path(cfg["run_dir"])
    steps = cfg["train"]["max_steps"]
    result_file = run_dir / "bench_result.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    if run_dir.exists():
        shutil.rmtree(run_dir)  # an unfinished run: start it again from scratch
    run_dir.mkdir(parents=True)
    cfg_path = run_dir.parent / f"{name}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    load_before, started = os.getloadavg()[0], time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    no_compile = {} if scale.torch_compile else {"TORCH_COMPILE_DISABLE": "1"}
    seconds = sh(["gpt-dist", "train", str(cfg_path)], run_dir.parent / f"{name}.log", **no_compile)
    curve = read_curve(run_dir / "metrics.jsonl")
    if not curve or curve[-1][0] != steps * scale.batch_tokens:
        raise SystemExit(f"{name}: {run_dir / 'metrics.jsonl'} has no validation row at step {steps}; "
                         f"check eval.every_steps divides train.max_steps")
    # Seconds depend on the machine's load (others' jobs share its cores): kept with them.
    result = {"what": spec["what"], "seconds": round(seconds, 1), "started": started,
              "load_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)], "curve": curve, "config": cfg,
              "parameters": _parameters(cfg["model"])}
    result_file.write_text(json.dumps(result, indent=1))
    return result


def _parameters(model: dict[str, Any]) -> dict[str, int]:
    from gpt_dist.config import ModelConfig
    from gpt_dist.model.factory import build_model

    m = build_model(ModelConfig(**model))
    total = m.num_parameters()
    return {"total": total, "non_embedding": m.num_parameters(non_embedding=True)}


def report(out: Path, runs: dict[str, dict[str, Any]], scale: Scale, meta: dict[str, Any]) -> dict[str, Any]:
    """OUT/token_efficiency.json and .png from the finished runs."""
    main = {k: v for k, v in runs.items() if not k.startswith("sweep_")}
    fractions = {}
    if "baseline" in main:
        for name, r in main.items():
            if name != "baseline":
                fractions[name] = token_fraction(main["baseline"]["curve"], r["curve"])
    summary = {
        **meta,
        "scale": scale.__dict__,
        "tokens_per_run": scale.max_steps * scale.batch_tokens,
        "baseline_final_val_loss": main["baseline"]["curve"][-1][1] if "baseline" in main else None,
        "fraction_of_baseline_tokens": fractions,
        "runs": runs,
    }
    (out / "token_efficiency.json").write_text(json.dumps(summary, indent=1))
    (out / "token_efficiency.md").write_text(markdown_table(summary))
    if main:
        plot(out / "token_efficiency.png", main, summary)
    return summary


def markdown_table(summary: dict[str, Any]) -> str:
    """One row per finished run, in the order they were defined (for docs/benchmarks.md)."""
    rows = ["| run | what | params (non-embedding) | final val loss | tokens to the baseline's final loss | seconds "
            "(load before -> after) |", "|---|---|---:|---:|---:|---:|"]
    for name, r in summary["runs"].items():
        frac = summary["fraction_of_baseline_tokens"].get(name)
        reach = "-" if name == "baseline" or name.startswith("sweep_") else (
            "not reached" if frac is None else f"{frac * summary['tokens_per_run']:,.0f} (**{frac:.2f}**)")
        p = r["parameters"]
        rows.append(f"| {name} | {r['what']} | {p['total']:,} ({p['non_embedding']:,}) | {r['curve'][-1][1]:.3f} | {reach} "
                    f"| {r['seconds']:.0f} ({' -> '.join(str(x) for x in r['load_1min']) if 'load_1min' in r else 'not recorded'}) |")
    return "\n".join(rows) + "\n"


def plot(path: Path, runs: dict[str, dict[str, Any]], summary: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    for name, r in runs.items():
        tok, loss = zip(*r["curve"])
        frac = summary["fraction_of_baseline_tokens"].get(name)
        label = name + ("" if name == "baseline" else f" ({frac:.2f} of baseline tokens)" if frac else " (never)")
        ax.plot([t / 1e3 for t in tok], loss, marker="o", ms=3, lw=2.2 if name in ("baseline", "recipe") else 1.2,
                ls="--" if name.endswith("_seed2") else "-", label=label)
    if summary["baseline_final_val_loss"] is not None:
        ax.axhline(summary["baseline_final_val_loss"], color="grey", lw=0.8, ls="--")
    s = summary["scale"]
    ax.set_title(f"{s['n_layer']} layers x {s['n_embd']}, vocab {s['vocab_size']}, {s['batch_seqs']}x{s['seq_len']} "
                 "tokens/step", fontsize=10)
    ax.set_xlabel("training tokens (thousands)")
    ax.set_ylabel("validation loss (nats/token)")
    lows = [min(l for _, l in r["curve"]) for r in runs.values()]
    ax.set_ylim(min(lows) - 0.1, max(r["curve"][0][1] for r in runs.values()) + 0.1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    global NICE  # what `sh` runs the commands at (--nice)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="work folder: corpus, tokenizer, shards, runs, report")
    ap.add_argument("--runs", nargs="*", default=None,
                    help="runs to train (default: every one that is not a sweep_ run); `list` prints them")
    ap.add_argument("--tiny", action="store_true",
                    help="a few steps of a tiny model on a corpus slice, one prepare task, torch.compile off (plumbing)")
    ap.add_argument("--baseline-lr", type=float, default=BASELINE_LR,
                    help=f"the baseline's peak lr (default {BASELINE_LR:g}; pick it with the sweep_baseline_ runs)")
    ap.add_argument("--nice", type=int, default=NICE, help=f"niceness of the commands (default {NICE})")
    ap.add_argument("--pydoc", action="store_true", help="add pydoc's topic texts to the corpus")
    args = ap.parse_args(argv)
    NICE = args.nice
    scale = TINY if args.tiny else FULL
    specs = run_specs(scale, args.baseline_lr)
    if args.runs == ["list"]:
        for name, spec in specs.items():
            print(f"{name:28s} {spec['what']}")
        return {}
    names = args.runs if args.runs else [n for n in specs if not n.startswith("sweep_")]
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise SystemExit(f"--runs: unknown {', '.join(unknown)}; choose from {', '.join(specs)}")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    corpus = build_corpus(out, scale, args.pydoc)
    tok, data, seconds = build_shards(out, scale, corpus)
    for name in names:
        r = train(out, scale, name, specs[name], tok, data)
        print(f"{name}: final val loss {r['curve'][-1][1]:.4f} after {r['curve'][-1][0]:.0f} tokens, {r['seconds']} s",
              flush=True)
    finished = {n: json.loads((out / "runs" / n / "bench_result.json").read_text()) for n in specs
                if (out / "runs" / n / "bench_result.json").exists()}
    manifest = json.loads((data / "train" / "manifest.json").read_text()) if (data / "train" / "manifest.json").exists() else {}
    meta = {"corpus_documents": sum(1 for _ in corpus.open()), "setup_seconds": seconds,
            "train_tokens_available": manifest.get("tokens") or manifest.get("num_tokens")}
    summary = report(out, finished, scale, meta)
    for name, frac in summary["fraction_of_baseline_tokens"].items():
        print(f"{name}: {'never reaches' if frac is None else f'{frac:.3f} of'} the baseline's tokens "
              f"to reach its final val loss {summary['baseline_final_val_loss']:.4f}")
    return summary


if __name__ == "__main__":
    main()
