"""The llama family through every command, on one tiny GQA checkpoint (llama-tiny: 2 layers,
4 query heads over 2 key/value heads) pre-trained by `gpt-dist train` for one step: CPT, SFT,
DPO and LoRA started from it with checkpoint.init_from; `generate` (left-padded batched KV-cache
decoding equal to each prompt alone and to transformers' LlamaForCausalLM greedy), `chat`,
`eval --data` / `--mc` (the checkpoint and its Llama export agree), `bench` against
LlamaForCausalLM, and `plan` for a llama shape."""

from __future__ import annotations

import io
import json
import math
import shlex
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from testutil import write_shard_set

from gpt_dist.checkpoint.model_loader import load_model, load_weights
from gpt_dist.cli import main
from gpt_dist.evaluation.multiple_choice import read_mc_file, score_items

# As README.md shows them.
README_PLAN = "gpt-dist plan --model llama-124m --json"
README_BENCH = "gpt-dist bench --model llama-tiny --seq-len 64 --micro-batch 2 --steps 2 --warmup 1 --compare-hf --json"
SEQ = 64
PROMPTS = ["The cat sat on", "Hello", "def add(a, b):\n    return"]
MC = [{"ctx": "The cat", "endings": ["sat on the mat.", "flew to the moon."], "label": 0},
      {"ctx": "Water boils at", "endings": ["100 degrees.", "a low temperature.", "noon."], "label": 0}]


def run(argv: list[str], capsys, stdin: str | None = None, monkeypatch=None) -> str:
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    assert main(argv) == 0
    return capsys.readouterr().out


def train_run(ws: Path, run_dir: str, *overrides: str) -> Path:
    """`gpt-dist train llama.yaml --set ...` in-process, on one thread; returns the run dir."""
    argv = ["train", str(ws / "llama.yaml"), "--set", f"run_dir={ws / run_dir}"]
    for o in overrides:
        argv += ["--set", o]
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model on a shared 2-core machine
    try:
        assert main(argv) == 0
    finally:
        torch.set_num_threads(before)
    return ws / run_dir


def train_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == "train"]


def token_windows() -> tuple[torch.Tensor, torch.Tensor]:
    """The train (16) and validation (6) sequences of SEQ + 1 random GPT-2 token ids."""
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 50257, (16, SEQ + 1), generator=g), torch.randint(0, 50257, (6, SEQ + 1), generator=g)


@pytest.fixture(scope="module")
def ws(tmp_path_factory, gpt2_vocab) -> Path:
    """data/{train,val} shards, sft.jsonl, dpo.jsonl, mc.jsonl, llama.yaml, and runs/base/ckpt:
    one pre-training step of llama-tiny (its init seeded apart from the later runs' seed)."""
    from gpt_dist.config import TokenizerConfig
    from gpt_dist.data.tokenizer import load_tokenizer

    root = tmp_path_factory.mktemp("llama_paths")
    tok = load_tokenizer(TokenizerConfig(kind="gpt2", path=str(gpt2_vocab)))
    train, val = token_windows()
    write_shard_set(root / "data/train", train.numpy(), tok)
    write_shard_set(root / "data/val", val.numpy(), tok)
    with (root / "sft.jsonl").open("w") as f:
        for i in range(4):
            f.write(json.dumps({"prompt": f"Count to {i}.", "completion": " ".join(map(str, range(i + 1)))}) + "\n")
    with (root / "dpo.jsonl").open("w") as f:
        for c, right, wrong in (("France", "Paris", "Rome"), ("Japan", "Tokyo", "Lima")):
            f.write(json.dumps({"prompt": f"What is the capital of {c}?", "chosen": f"It is {right}.",
                                "rejected": f"It is {wrong}."}) + "\n")
    (root / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in MC))
    (root / "llama.yaml").write_text(f"""
model: {{preset: llama-tiny, attn_impl: sdpa}}
tokenizer: {{kind: gpt2}}
data: {{train: [{{path: {root}/data/train}}], val: {root}/data/val, num_workers: 0}}
train: {{seq_len: {SEQ}, micro_batch_size: 2, global_batch_tokens: {2 * SEQ}, max_steps: 2, lr: 1.0e-3,
         warmup_fraction: 0.0, precision: fp32, seed: 7}}
engine: {{zero_stage: 0}}
checkpoint: {{every_steps: 1000}}
log: {{every_steps: 1, progress_bar: false}}
eval: {{every_steps: 1000, batches: 1}}
""")
    train_run(root, "runs/base", "train.max_steps=1", "train.seed=1234")
    return root


@pytest.fixture(scope="module")
def base(ws):
    return load_weights(ws / "runs/base/ckpt")[1]


@pytest.fixture(scope="module")
def hf_export(ws) -> Path:
    from gpt_dist.conversion import export_hf

    return export_hf(ws / "runs/base/ckpt", ws / "exports/base-hf")


SFT = ["stage=sft", "data.train=[{path: %(ws)s/sft.jsonl}]", "data.val=null", "train.global_batch_tokens=null",
       "train.global_batch_size=2"]
STAGES = {
    "cpt": ["stage=cpt"],
    "sft": SFT,
    "dpo": ["stage=dpo", "data.train=[{path: %(ws)s/dpo.jsonl}]", "data.val=null", "train.global_batch_tokens=null",
            "train.global_batch_size=2", "train.micro_batch_size=1"],
    "lora": [*SFT, "lora.r=4", "lora.alpha=8", "lora.target_modules=[c_attn, c_proj, c_fc]"],
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_stage_trains_a_llama_from_a_llama_checkpoint(ws, base, stage):
    """Two steps each, started from runs/base/ckpt: the weights start there (a fresh init with
    the run's seed is ~0.02 away per weight, two AdamW steps at 1e-3 move them ~2e-3), and the
    run's checkpoint is still the same llama (kv heads, shapes)."""
    overrides = [o % {"ws": ws} for o in STAGES[stage]]
    run_dir = train_run(ws, f"runs/{stage}", *overrides, f"checkpoint.init_from={ws / 'runs/base/ckpt'}")
    rows = train_rows(run_dir)
    assert [r["step"] for r in rows] == [1, 2] and all(math.isfinite(r["loss"]) for r in rows)
    cfg, state, _ = load_weights(run_dir / "ckpt")  # LoRA merged
    assert (cfg.arch, cfg.n_kv_head) == ("llama", 2) and state.keys() == base.keys()
    for name, t in state.items():
        torch.testing.assert_close(t, base[name], rtol=0, atol=5e-3, msg=name)
    changed = {name for name, t in state.items() if not torch.equal(t, base[name])}
    if stage == "lora":  # only the adapted projections move; every other weight is the base's, bit for bit
        assert changed and all(n.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")) for n in changed)
    else:
        assert "transformer.wte.weight" in changed and "transformer.h.0.attn.c_attn.weight" in changed
    if stage == "dpo":  # policy = reference before the first update
        assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)


def generate(model: Path, prompts: list[str], capsys, *extra: str) -> list[dict]:
    out = run(["generate", "--model", str(model), "--prompt", *prompts, "--temperature", "0",
               "--max-new-tokens", "8", "--json", *extra], capsys)
    return [json.loads(line) for line in out.splitlines()]


def test_generate_batched_left_padded_equals_each_prompt_alone_and_transformers(ws, hf_export, capsys):
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    ckpt = ws / "runs/base/ckpt"
    batched = generate(ckpt, PROMPTS, capsys)
    assert [r["prompt"] for r in batched] == PROMPTS
    assert [generate(ckpt, [p], capsys)[0] for p in PROMPTS] == batched
    assert generate(hf_export, PROMPTS, capsys) == batched

    hf = AutoModelForCausalLM.from_pretrained(hf_export, local_files_only=True).eval()
    assert type(hf) is LlamaForCausalLM
    tok = load_model(ckpt).tokenizer
    for r in batched:
        ids = torch.tensor([tok.encode(r["prompt"])])
        with torch.no_grad():
            out = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=8,
                              pad_token_id=tok.eot_id)
        new = out[0, ids.shape[1]:].tolist()
        assert r["tokens"] == new[: len(r["tokens"])], r["prompt"]
        assert r["finish_reason"] == "eot" or len(r["tokens"]) == 8


def test_chat_answers_what_the_chat_session_answers(ws, capsys, monkeypatch):
    from gpt_dist.finetune.chat_template import ChatTemplate
    from gpt_dist.generation.chat import ChatSession
    from gpt_dist.generation.token_sampling import SamplingParams

    from gpt_dist.finetune.chat_template import DEFAULT_CHAT_TEMPLATE

    ckpt = ws / "runs/base/ckpt"  # pre-trained only: the template comes with the command
    (ws / "template.jinja").write_text(DEFAULT_CHAT_TEMPLATE)
    out = run(["chat", "--model", str(ckpt), "--chat-template", str(ws / "template.jinja"), "--temperature", "0",
               "--max-new-tokens", "5"], capsys, stdin="Count to 2.\nAnd again?\n", monkeypatch=monkeypatch)
    m = load_model(ckpt)
    session = ChatSession(m.model, ChatTemplate(DEFAULT_CHAT_TEMPLATE, m.tokenizer),
                          SamplingParams(temperature=0, max_new_tokens=5))
    assert out == f"{session.reply('Count to 2.')}\n{session.reply('And again?')}\n"


def test_eval_data_and_mc_agree_between_the_checkpoint_transformers_and_its_export(ws, hf_export, capsys):
    from transformers import AutoModelForCausalLM

    ckpt = ws / "runs/base/ckpt"
    r = json.loads(run(["eval", "--model", str(ckpt), "--data", str(ws / "data"), "--json"], capsys))
    # transformers' own loss over the same six validation sequences, every next token counted
    hf = AutoModelForCausalLM.from_pretrained(hf_export, local_files_only=True).eval()
    windows = token_windows()[1]
    with torch.no_grad():
        logits = hf(windows[:, :-1]).logits.double()
    want = F.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten()).item()
    assert r["loss"] == pytest.approx(want, abs=1e-5)
    assert json.loads(run(["eval", "--model", str(hf_export), "--data", str(ws / "data"), "--json"], capsys))["loss"] \
        == pytest.approx(r["loss"], abs=1e-5)

    m = load_model(ckpt)
    expected = score_items(m.model, m.tokenizer, read_mc_file(ws / "mc.jsonl"), torch.device("cpu"))
    for source in (ckpt, hf_export):
        r = json.loads(run(["eval", "--model", str(source), "--mc", str(ws / "mc.jsonl"), "--json"], capsys))
        assert r["mc"]["items"] == 2 and r["mc"] == pytest.approx({"file": str(ws / "mc.jsonl"), **expected}, abs=1e-6)


def test_readme_bench_times_llama_against_transformers_llama_on_the_same_batches(capsys):
    r = json.loads(run(shlex.split(README_BENCH)[1:], capsys))
    assert (r["model"]["arch"], r["model"]["n_kv_head"], r["hf_class"]) == ("llama", 2, "LlamaForCausalLM")
    assert r["tokens_per_s"] > 0 and r["hf_tokens_per_s"] > 0
    assert r["hf_first_loss"] == pytest.approx(r["first_loss"], abs=1e-5)
    assert r["hf_last_loss"] == pytest.approx(r["last_loss"], abs=1e-4)  # after the same two AdamW updates


def test_readme_plan_for_a_llama_shape_counts_its_parameters_and_flops(capsys):
    from gpt_dist.config import ModelConfig, resolve_model_config
    from gpt_dist.model.factory import build_model

    p = json.loads(run(shlex.split(README_PLAN)[1:], capsys))
    cfg = resolve_model_config(ModelConfig(preset="llama-124m"))
    with torch.device("meta"):
        model = build_model(cfg)
    assert p["params"] == model.num_parameters() and p["non_embedding_params"] == model.num_parameters(non_embedding=True)
    head = cfg.vocab_size * cfg.n_embd
    assert p["flops_per_token"] == 6.0 * (p["non_embedding_params"] + head) + 12.0 * 12 * 768 * 1024
    # Activations per layer: 20h + 4kv + 8f bytes per token (kv = 4 heads x 64, f = 2048), 8 x 1024 tokens.
    assert p["activations_gib"]["per_layer"] == pytest.approx(8 * 1024 * (20 * 768 + 4 * 256 + 8 * 2048) / 2**30, abs=1e-3)
    stages = p["memory_per_gpu_gib"]
    totals = [stages[str(k)]["total_gib"] for k in range(4)]
    assert totals == sorted(totals, reverse=True) and totals[0] > totals[3]  # each ZeRO stage shards more
    # ZeRO-0 keeps 16 bytes per stored parameter (bf16 weights and grads, fp32 master, m, v)
    assert stages["0"]["model_states_gib"] == pytest.approx(16 * p["stored_params"] / 2**30, abs=1e-3)
