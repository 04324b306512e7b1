"""`gpt-dist bench --model`: how fast a model shape trains here, and against Hugging Face.

    result = run_training_benchmark(BenchSettings(model=load_model_config("mini"), compare_hf=True))

Method, stated once because every figure depends on it:
- Batches are uniform random token ids (seeded), `micro_batch` x (`seq_len` + 1) tokens split
  into inputs and next-token targets; speed does not depend on what the tokens are.
  `loss_fraction` < 1 leaves the first (1 - fraction) of every row's targets without a loss
  (IGNORE_INDEX), as an SFT row's prompts are: `tokens_per_s` still counts every token, and
  `loss_tokens_per_step` the ones with a loss.
- Each step is one forward, backward and optimizer update of one micro-batch
  (gpt_dist.benchmark.train_step), timed with a wall clock after a CUDA synchronise on either
  side. The first `warmup` steps are run and not timed (allocator, kernel selection, lazy
  optimizer state).
- `step_ms` is the median timed step (`step_ms_each` lists them all); `tokens_per_s` = tokens
  per step x ranks / median step. The median, because a shared machine's other processes show
  up as outliers. `step_cpu_ms` is the median CPU time this process spent per step (all its
  threads, user + system): on a CPU it varies less with other processes than the wall clock,
  on a GPU it is the host's share.
- `mfu` = flops_per_token x tokens_per_s / (peak x ranks), with the training logs'
  flops_per_token (6N + 12·L·d·T) and bf16 dense peak (gpt_dist.model.cost). It is null on a CPU,
  whose peak is not known; `achieved_tflops` is reported everywhere.
- `peak_memory_gb` (GiB): on CUDA torch.cuda.max_memory_allocated over the whole run; on a CPU
  the process's resident-set high-water mark (ru_maxrss), which includes the interpreter and
  libraries. With --compare-hf both models are resident, so it covers both.
- `--compare-hf` runs Hugging Face's model of the family (GPT2LMHeadModel, LlamaForCausalLM;
  `hf_class`) with our weights on the same batches,
  dtype and optimizer, in this process. Each step index is a pair (ours, theirs) on the same
  batch; the order inside the pair alternates so neither side always runs on a warmer cache.
  `speedup_vs_hf` is the median over timed pairs of theirs_ms / ours_ms (> 1: we are faster);
  `speedup_vs_hf_cpu_time` the same ratio of CPU times.
  `first_loss` / `hf_first_loss` are both models' losses on the first batch, before any update,
  and `last_loss` / `hf_last_loss` on the last one: equal to float rounding, they show that both
  ran the same batches through the same function and the same optimizer updates.
- `--compile` (= `--compile both`) also runs a copy of our model with the same weights under torch.compile
  (gpt_dist.engine.parallelize, as `engine.compile: true` trains), in the same rotation:
  `compile_speedup` is the median over steps of eager_ms / compiled_ms, `compiled_speedup_vs_hf`
  that of hf_ms / compiled_ms. `--compile on` times the compiled model alone (no eager copy
  resident). Compilation happens in the warm-up steps (give at least 1).
- `attn_kernel` is the attention kernel our model runs (flash_attn, sdpa or math) and
  `loss_chunk_tokens` the chunking of its LM-head loss (0 = plain).
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from gpt_dist.batch_geometry import BatchGeometry, batch_geometry
from gpt_dist.config import PRECISIONS, EngineConfig, ModelConfig, TrainConfig
from gpt_dist.errors import UserError
from gpt_dist.model.loss import IGNORE_INDEX

Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
COMPILE_MODES = ("off", "both", "on")


@dataclass
class BenchSettings:
    model: ModelConfig  # resolved
    seq_len: int | None = None  # null = model.block_size
    micro_batch: int = 8
    steps: int = 10
    warmup: int = 3
    precision: str = "fp32"
    zero_stage: int | None = None  # None: bare model + AdamW; 0-3: a DeepSpeed engine
    compare_hf: bool = False
    # "both": also time a torch.compile'd copy (engine.compile), alternating with eager;
    # "on": time only the compiled model (one copy resident, as in training); "off".
    compile: str = "off"
    loss_chunk_tokens: int | None = None  # null = model.loss_chunk_tokens
    loss_fraction: float = 1.0  # the share of each row's targets with a loss (SFT: its replies)
    seed: int = 0

    def validate(self) -> None:
        m = self.model
        seq = self.seq_len if self.seq_len is not None else m.block_size
        if not 0 < seq <= m.block_size:
            raise UserError(f"--seq-len: {seq} must be in 1..model.block_size ({m.block_size}); lower it")
        if self.micro_batch < 1:
            raise UserError(f"--micro-batch: {self.micro_batch} must be at least 1 sequence")
        if self.steps < 1:
            raise UserError(f"--steps: {self.steps} must be at least 1 timed step")
        if self.warmup < 0:
            raise UserError(f"--warmup: {self.warmup} must be 0 or more")
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision: '{self.precision}' is not one of {', '.join(PRECISIONS)}")
        if self.compile not in COMPILE_MODES:
            raise UserError(f"--compile: '{self.compile}' is not one of {', '.join(COMPILE_MODES)}")
        if self.compile != "off" and self.warmup < 1:
            raise UserError("--compile: give --warmup 1 or more (compilation happens in the first step, untimed)")
        if self.loss_chunk_tokens is not None and self.loss_chunk_tokens < 0:
            raise UserError(f"--loss-chunk-tokens: {self.loss_chunk_tokens} must be 0 (no chunks) or more")
        if not 0 < self.loss_fraction <= 1:
            raise UserError(f"--loss-fraction: {self.loss_fraction} must be in (0, 1]: the share of tokens with a loss")
        if self.zero_stage is not None and self.zero_stage not in (0, 1, 2, 3):
            raise UserError(f"--zero-stage: {self.zero_stage} is not 0, 1, 2 or 3")


def run_training_benchmark(s: BenchSettings) -> dict[str, Any]:
    """Time `s.steps` training steps after `s.warmup`; the JSON object of `gpt-dist bench`."""
    from gpt_dist.benchmark.train_step import EagerStep, EngineStep
    from gpt_dist.engine.parallelize import parallelize
    from gpt_dist.model.attention import kernel_name
    from gpt_dist.model.cost import detect_peak_flops, flops_per_token

    s.validate()
    if s.zero_stage is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("bench under a launcher with several ranks needs --zero-stage K (the bare model runs one process)")
    m = s.model
    if s.loss_chunk_tokens is not None:
        m.loss_chunk_tokens = s.loss_chunk_tokens
    seq_len = s.seq_len if s.seq_len is not None else m.block_size
    if s.zero_stage is not None:
        from gpt_dist.engine.distributed import init_distributed

        dist = init_distributed()
        rank, world, device = dist.rank, dist.world_size, dist.device
    else:
        rank, world = 0, 1
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    t, geometry = _train_settings(s, seq_len, world)
    if device.type == "cuda":  # a peak of this run, not of earlier runs in the same process
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)

    torch.manual_seed(s.seed)
    if device.type == "cuda":  # initialised on the GPU: seconds saved per run at gpt2-large sizes
        torch.set_default_device(device)
    try:
        models = _build_models(s, m)
    finally:
        torch.set_default_device(None)
    runners: dict[str, Step] = {}
    for name, (model, compiled) in models.items():
        if s.zero_stage is None:
            runners[name] = EagerStep(parallelize(model, device, t.precision, compile=compiled), t, device)
        else:  # the engine set-up parallelizes
            engine = EngineConfig(zero_stage=s.zero_stage, compile=compiled)
            runners[name] = EngineStep(model, t, engine, geometry, device)

    # Different ranks get different batches, as data-parallel training does.
    gen = torch.Generator().manual_seed(s.seed * 1000 + rank)
    n = s.warmup + s.steps
    tokens = torch.randint(0, m.vocab_size, (n, s.micro_batch, seq_len + 1), generator=gen)
    targets = tokens[:, :, 1:].clone()
    targets[:, :, : seq_len - max(1, round(s.loss_fraction * seq_len))] = IGNORE_INDEX  # a prompt per row

    times: dict[str, list[float]] = {name: [] for name in runners}
    cpu_times: dict[str, list[float]] = {name: [] for name in runners}
    first_loss: dict[str, float] = {}
    last_loss: dict[str, torch.Tensor] = {}
    for i in range(n):
        x = tokens[i, :, :-1].to(device, non_blocking=True)
        y = targets[i].to(device, non_blocking=True)
        names = list(runners)
        order = names[i % len(names):] + names[: i % len(names)]  # who goes first rotates
        for name in order:
            dt, cpu, loss = _timed(runners[name], x, y, device)
            if i == 0:
                first_loss[name] = loss.item()
            last_loss[name] = loss
            if i >= s.warmup:
                times[name].append(dt)
                cpu_times[name].append(cpu)

    tokens_per_step = s.micro_batch * seq_len
    step_s = statistics.median(times["ours"])
    tokens_per_s = tokens_per_step * world / step_s
    fpt = flops_per_token(m, seq_len)
    peak = detect_peak_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    result: dict[str, Any] = {
        "model": _model_summary(m),
        "device": _device_name(device),
        "world_size": world,
        "precision": s.precision,
        "zero_stage": s.zero_stage,
        "seq_len": seq_len,
        "micro_batch": s.micro_batch,
        "warmup": s.warmup,
        "steps": s.steps,
        "tokens_per_step": tokens_per_step * world,
        "loss_fraction": s.loss_fraction,
        "loss_tokens_per_step": int((targets[0] != IGNORE_INDEX).sum()) * world,
        "step_ms": 1000 * step_s,
        "step_ms_min": 1000 * min(times["ours"]),
        "step_ms_max": 1000 * max(times["ours"]),
        "step_ms_each": [round(1000 * t, 3) for t in times["ours"]],
        "step_cpu_ms": 1000 * statistics.median(cpu_times["ours"]),
        "tokens_per_s": tokens_per_s,
        "tokens_per_s_per_rank": tokens_per_s / world,
        "flops_per_token": fpt,
        "achieved_tflops": fpt * tokens_per_s / world / 1e12,
        "mfu": fpt * tokens_per_s / (peak * world) if peak else None,
        "peak_flops": peak,
        "peak_memory_gb": _peak_memory_gb(device),
        "peak_memory_kind": "cuda_max_allocated" if device.type == "cuda" else "process_max_rss",
        "first_loss": first_loss["ours"],
        "last_loss": last_loss["ours"].item(),
        "loss_chunk_tokens": m.loss_chunk_tokens,
        "compile": s.compile,
        "attn_kernel": kernel_name(models["ours"][0].transformer.h[0].attn.kernel),
    }
    if s.compile == "both":
        result.update(
            compiled_step_ms=1000 * statistics.median(times["compiled"]),
            compiled_step_ms_each=[round(1000 * t, 3) for t in times["compiled"]],
            compiled_tokens_per_s=tokens_per_step * world / statistics.median(times["compiled"]),
            compile_speedup=statistics.median([e / c for e, c in zip(times["ours"], times["compiled"])]),
            compiled_first_loss=first_loss["compiled"],
            compiled_last_loss=last_loss["compiled"].item(),
        )
    if s.compare_hf:
        hf_s = statistics.median(times["hf"])
        ratios = [h / o for h, o in zip(times["hf"], times["ours"])]
        hf_model = models["hf"][0].hf
        result.update(
            hf_step_ms=1000 * hf_s,
            hf_step_ms_each=[round(1000 * t, 3) for t in times["hf"]],
            hf_step_cpu_ms=1000 * statistics.median(cpu_times["hf"]),
            hf_tokens_per_s=tokens_per_step * world / hf_s,
            hf_first_loss=first_loss["hf"],
            hf_last_loss=last_loss["hf"].item(),
            hf_class=type(hf_model).__name__,
            hf_attn_implementation=hf_model.config._attn_implementation,
            speedup_vs_hf=statistics.median(ratios),
            speedup_vs_hf_cpu_time=statistics.median([h / o for h, o in zip(cpu_times["hf"], cpu_times["ours"])]),
        )
        if s.compile == "both":
            result["compiled_speedup_vs_hf"] = statistics.median([h / c for h, c in zip(times["hf"], times["compiled"])])
    return result


def _build_models(s: BenchSettings, m: ModelConfig) -> dict[str, tuple[torch.nn.Module, bool]]:
    """name -> (module, whether its runner compiles it): ours, its compiled copy, HF's twin."""
    from gpt_dist.model.factory import build_model

    models: dict[str, tuple[torch.nn.Module, bool]] = {"ours": (build_model(m), s.compile == "on")}
    if s.compile == "both":  # the same weights, compiled
        compiled = build_model(m)
        compiled.load_state_dict(models["ours"][0].state_dict())
        models["compiled"] = (compiled, True)
    if s.compare_hf:
        from gpt_dist.benchmark.hf_reference import HFCausalLM, build_hf_twin

        models["hf"] = (HFCausalLM(build_hf_twin(models["ours"][0])), False)
    return models


def _train_settings(s: BenchSettings, seq_len: int, world: int) -> tuple[TrainConfig, BatchGeometry]:
    """The `train:` settings the step runners read (optimizer, clipping, precision; the defaults
    otherwise) and the batch geometry: one micro-batch per rank per optimizer step."""
    t = TrainConfig(micro_batch_size=s.micro_batch, seq_len=seq_len, precision=s.precision,
                    global_batch_tokens=s.micro_batch * seq_len * world)
    return t, batch_geometry(t, seq_len, "pretrain", world)


def _timed(step: Step, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> tuple[float, float, torch.Tensor]:
    """(wall seconds, this process's CPU seconds, loss) of one step."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0, c0 = time.perf_counter(), time.process_time()
    loss = step(x, y)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0, time.process_time() - c0, loss


def _peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def _model_summary(m: ModelConfig) -> dict[str, Any]:
    return {"preset": m.preset, "arch": m.arch, "n_layer": m.n_layer, "n_head": m.n_head, "n_kv_head": m.n_kv_head,
            "n_embd": m.n_embd,
            "block_size": m.block_size, "vocab_size": m.vocab_size, "padded_vocab_size": m.padded_vocab_size,
            "attn_impl": m.attn_impl, "activation_checkpointing": m.activation_checkpointing}


def format_result(r: dict[str, Any]) -> str:
    """The human-readable lines printed by `gpt-dist bench` (without --json)."""
    mo = r["model"]
    name = mo["preset"] or f"{mo['n_layer']}x{mo['n_embd']}"
    engine = "bare model + AdamW" if r["zero_stage"] is None else f"DeepSpeed ZeRO-{r['zero_stage']}"
    mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a (peak FLOP/s unknown on this device)"
    lines = [
        f"model        {name}, seq {r['seq_len']}, micro-batch {r['micro_batch']}, {r['precision']}, {engine}"
        + (f", loss on {r['loss_tokens_per_step']:,} of {r['tokens_per_step']:,} tokens" if r["loss_fraction"] < 1 else ""),
        f"device       {r['device']} x {r['world_size']}",
        (f"step         {r['step_ms']:.1f} ms median of {r['steps']} (min {r['step_ms_min']:.1f}, "
         f"max {r['step_ms_max']:.1f}) after {r['warmup']} warm-up"),
        f"throughput   {r['tokens_per_s']:,.0f} tokens/s ({r['achieved_tflops']:.3g} TFLOP/s per rank), MFU {mfu}",
        f"peak memory  {r['peak_memory_gb']:.2f} GiB ({r['peak_memory_kind']})",
    ]
    if "compile_speedup" in r:
        lines.append(
            f"compiled     {r['compiled_tokens_per_s']:,.0f} tokens/s ({r['compiled_step_ms']:.1f} ms); "
            f"{r['compile_speedup']:.3f}x eager; first-batch loss {r['compiled_first_loss']:.6f}"
        )
    if "speedup_vs_hf" in r:
        lines.append(
            f"vs HF        {r['hf_tokens_per_s']:,.0f} tokens/s ({r['hf_step_ms']:.1f} ms, attention "
            f"{r['hf_attn_implementation']}); speedup {r['speedup_vs_hf']:.3f}x; first-batch loss "
            f"{r['first_loss']:.6f} vs {r['hf_first_loss']:.6f}"
        )
    return "\n".join(lines)
