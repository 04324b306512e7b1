"""How fast a configuration trains, measured before cluster days are spent on it.

    train_step.py     one training step (forward, backward, optimizer) as gpt_dist trains:
                      the bare model with AdamW, or a DeepSpeed engine
    hf_reference.py   Hugging Face's model of the family (GPT2LMHeadModel, LlamaForCausalLM)
                      computing the same function as ours
    training.py       `gpt-dist bench --model`: timed steps, tokens/s, MFU, peak memory,
                      and the alternating comparison against the Hugging Face model
    data_loader.py    `gpt-dist bench --data`: the training loader alone, tokens/s per rank
"""
