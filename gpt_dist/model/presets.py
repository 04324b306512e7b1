"""Named model shapes.

The four OpenAI sizes use the GPT-2 vocabulary (50257) and 1024 positions; with
`vocab_pad_multiple: 1` their parameter counts equal OpenAI's checkpoints exactly
(124,439,808 / 354,823,168 / 774,030,080 / 1,557,611,200). `tiny` is for unit tests,
`mini` for the built-in sample run on a CPU.
"""

GPT2_VOCAB_SIZE = 50257

PRESETS: dict[str, dict[str, int]] = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=GPT2_VOCAB_SIZE),
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024, block_size=1024, vocab_size=GPT2_VOCAB_SIZE),
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280, block_size=1024, vocab_size=GPT2_VOCAB_SIZE),
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600, block_size=1024, vocab_size=GPT2_VOCAB_SIZE),
    "mini": dict(n_layer=4, n_head=4, n_embd=128, block_size=256, vocab_size=GPT2_VOCAB_SIZE),
    "tiny": dict(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=GPT2_VOCAB_SIZE),
}
