"""Helpers shared by the conversion tests: random tiny models on both sides, greedy decoding."""

from __future__ import annotations

import torch

from gpt_dist.config import ModelConfig, resolve_model_config
from gpt_dist.model.gpt import GPT

# Mixed English / Chinese / Vietnamese, as users' data is.
MIXED_TEXTS = [
    "Hello world! The model's loss fell from 10.9 to 3.2 after 1,000 steps.",
    "大型语言模型需要大量的训练数据。我们今天在北京测试分词器，结果很好！",
    "Tiếng Việt có nhiều dấu thanh: sắc, huyền, hỏi, ngã, nặng. Xin cảm ơn rất nhiều.",
    "Mixed 混合 text văn bản\n\n  with   odd\tspacing, emoji 🎉 and code: def f(x): return x**2",
]


def tiny_config(**overrides) -> ModelConfig:
    return resolve_model_config(ModelConfig(preset="tiny", **overrides))


def _randomize(named_parameters) -> None:
    """Random values everywhere, LayerNorms and biases included, so every tensor matters."""
    with torch.no_grad():
        for name, p in named_parameters:
            if ".ln_" in name or "ln_f" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.normal_(0.0, 0.02)


def random_gpt(cfg: ModelConfig, seed: int = 0) -> GPT:
    """Our GPT with random weights (eval mode)."""
    torch.manual_seed(seed)
    model = GPT(cfg)
    _randomize(model.named_parameters())
    return model.eval()


def random_hf_gpt2(seed: int = 0, **config):
    """transformers' GPT2LMHeadModel, tiny (the "tiny" preset's shape), with random weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    conf = GPT2Config(**{**dict(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=50257), **config})
    model = GPT2LMHeadModel(conf)
    _randomize(model.named_parameters())
    return model.eval()


def greedy(model: GPT, idx: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Greedy decoding with our model: append the argmax token `new_tokens` times."""
    with torch.no_grad():
        for _ in range(new_tokens):
            logits = model(idx[:, -model.config.block_size :])  # (B, T, vocab)
            idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx


def hf_greedy(model, idx: torch.Tensor, new_tokens: int) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(
            idx,
            attention_mask=torch.ones_like(idx),
            max_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=model.config.eos_token_id,
        )


def corpus(lines: int = 2000, seed: int = 0) -> list[str]:
    """Shuffled words of MIXED_TEXTS: enough text to train a few-hundred-token tokenizer."""
    import random

    rng = random.Random(seed)
    words = " ".join(MIXED_TEXTS).split(" ")
    return [" ".join(rng.sample(words, rng.randint(3, len(words) - 1))) for _ in range(lines)]


def train_byte_bpe(path, vocab_size: int = 600) -> None:
    """A byte-level BPE tokenizer.json with "<|endoftext|>", as the tokenizers library trains it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus(), trainer)
    tok.save(str(path))


def train_sentencepiece(prefix, model_type: str, normalization: str) -> str:
    """A SentencePiece model with byte fallback and an "<|endoftext|>" control symbol; returns the .model path."""
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus()),
        model_prefix=str(prefix),
        model_type=model_type,
        vocab_size=450,
        hard_vocab_limit=False,
        byte_fallback=True,
        control_symbols=["<|endoftext|>"],
        normalization_rule_name=normalization,
        character_coverage=0.9995,
        minloglevel=2,
    )
    return f"{prefix}.model"
