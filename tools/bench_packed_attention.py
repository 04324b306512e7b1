"""A packed SFT training step (forward, backward of the mean loss) with the attention of packed
rows done two ways, each in its own process so that peak RSS is its own:

  segments  what GPT.forward does: no mask; one causal SDPA per segment (FlashAttention-2's
            variable-length kernel where flash-attn runs)
  dense     the (B, 1, T, T) boolean segment mask handed to SDPA, as before

    python tools/bench_packed_attention.py [--model gpt2] [--seq-len 1024] [--micro-batch 4]

Rows are filled with samples of 64..512 tokens (seeded), as `finetune.packing` would fill them;
prints one JSON object per variant: median step seconds over --steps after one warm-up step,
and the process's peak RSS (GiB).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch


def packed_batch(micro_batch: int, seq_len: int, vocab: int, lengths=(64, 512), seed: int = 0):
    """(B, T) token ids, segment ids and positions: rows filled with samples of `lengths` tokens."""
    g = torch.Generator().manual_seed(seed)
    segment_ids = torch.zeros(micro_batch, seq_len, dtype=torch.long)
    position_ids = torch.zeros(micro_batch, seq_len, dtype=torch.long)
    for r in range(micro_batch):
        at, s = 0, 0
        while at < seq_len:
            n = min(int(torch.randint(lengths[0], lengths[1] + 1, (1,), generator=g)), seq_len - at)
            segment_ids[r, at : at + n] = s
            position_ids[r, at : at + n] = torch.arange(n)
            at, s = at + n, s + 1
    x = torch.randint(0, vocab, (micro_batch, seq_len), generator=g)
    return x, segment_ids, position_ids


def measure(variant: str, model_name: str, seq_len: int, micro_batch: int, steps: int, lengths=(64, 512)) -> dict:
    from gpt_dist.model.attention import sdpa_attention, segment_mask
    from gpt_dist.model.gpt import GPT
    from gpt_dist.planning import load_model_config

    torch.manual_seed(0)
    m = load_model_config(model_name)
    model = GPT(m).train()
    model.set_attention_kernel(torch.device("cpu"), torch.float32)
    if variant == "dense":
        def dense(q, k, v, mask=None, segments=None):
            return sdpa_attention(q, k, v, mask=segment_mask(segments.segment_ids) if segments is not None else mask)

        for block in model.transformer.h:
            block.attn.kernel = dense
    x, seg, pos = packed_batch(micro_batch, seq_len, m.vocab_size, lengths)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        loss = model(x, x, segment_ids=seg, position_ids=pos)
        loss.backward()
        model.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - t0)
    return {"variant": variant, "model": model_name, "seq_len": seq_len, "micro_batch": micro_batch,
            "segments": int(seg.max(dim=1).values.add(1).sum()), "step_s": statistics.median(times),
            "loss": loss.item(), "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="gpt2")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--variant", choices=("segments", "dense"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.variant:
        print(json.dumps(measure(a.variant, a.model, a.seq_len, a.micro_batch, a.steps)))
        return 0
    for variant in ("segments", "dense"):
        subprocess.run([sys.executable, __file__, "--variant", variant, "--model", a.model, "--seq-len", str(a.seq_len),
                        "--micro-batch", str(a.micro_batch), "--steps", str(a.steps)], check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
