"""Named model shapes.

The four OpenAI sizes use the GPT-2 vocabulary (50257) and 1024 positions; with
`vocab_pad_multiple: 1` their parameter counts equal OpenAI's checkpoints exactly
(124,439,808 / 354,823,168 / 774,030,080 / 1,557,611,200). `tiny` is for unit tests,
`mini` for the built-in sample run on a CPU.

The `llama-*` presets have the same depth, width, heads, positions and vocabulary as the GPT-2
one of the same size (llama-124m ~ gpt2, -350m ~ gpt2-medium, -774m ~ gpt2-large, -1.5b ~
gpt2-xl, llama-mini ~ mini, llama-tiny ~ tiny), with a quarter to a fifth as many key/value
heads (grouped-query attention). Their SwiGLU hidden size follows LLaMA (8/3 n_embd rounded up
to 256), so the MLP holds about as many weights as GPT-2's 4x GELU MLP.
"""

from typing import Any

GPT2_VOCAB_SIZE = 50257

_GPT2 = dict(block_size=1024, vocab_size=GPT2_VOCAB_SIZE)

PRESETS: dict[str, dict[str, Any]] = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, **_GPT2),
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024, **_GPT2),
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280, **_GPT2),
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600, **_GPT2),
    "mini": dict(n_layer=4, n_head=4, n_embd=128, block_size=256, vocab_size=GPT2_VOCAB_SIZE),
    "tiny": dict(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=GPT2_VOCAB_SIZE),
    "llama-124m": dict(arch="llama", n_layer=12, n_head=12, n_kv_head=4, n_embd=768, **_GPT2),
    "llama-350m": dict(arch="llama", n_layer=24, n_head=16, n_kv_head=4, n_embd=1024, **_GPT2),
    "llama-774m": dict(arch="llama", n_layer=36, n_head=20, n_kv_head=5, n_embd=1280, **_GPT2),
    "llama-1.5b": dict(arch="llama", n_layer=48, n_head=25, n_kv_head=5, n_embd=1600, **_GPT2),
    # 8/3 * 128 = 341 -> 352 with a multiple of 32 (256 would make the MLP 4x, like GPT-2's).
    "llama-mini": dict(arch="llama", n_layer=4, n_head=4, n_kv_head=2, n_embd=128, mlp_multiple=32,
                       block_size=256, vocab_size=GPT2_VOCAB_SIZE),
    "llama-tiny": dict(arch="llama", n_layer=2, n_head=4, n_kv_head=2, n_embd=32, mlp_multiple=32,
                       block_size=64, vocab_size=GPT2_VOCAB_SIZE),
}
