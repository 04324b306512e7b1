"""How good a model is: `gpt-dist eval`.

    model_source.py      the model and tokenizer behind --model (a gpt_dist checkpoint or a
                         Hugging Face GPT-2 directory, read by gpt_dist.conversion)
    lm_loss.py           token-weighted loss, perplexity and token count over validation
                         batches, summed across ranks
    multiple_choice.py   HellaSwag-format items scored by the log-likelihood of each ending

lm-eval-harness runs on a directory written by `gpt-dist convert to-hf` (README).
"""
