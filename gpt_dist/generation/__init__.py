"""Text generation from trained models.

    token_sampling.py  repetition penalty, temperature (0 = greedy), top-k, top-p
    decoding.py        batched, left-padded decoding with a KV cache; stops at end-of-text
    chat.py            multi-turn chat through the model's chat template

    from gpt_dist.checkpoint.model_loader import load_model
    from gpt_dist.generation.decoding import generate
    from gpt_dist.generation.token_sampling import SamplingParams
    m = load_model("runs/sft/ckpt")
    out = generate(m.model, [m.tokenizer.encode("Once upon a time")], SamplingParams(temperature=0), m.tokenizer.eot_id)
"""
