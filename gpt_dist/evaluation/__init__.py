"""How good a model is: `gpt-dist eval`.

    lm_loss.py           token-weighted loss, perplexity and token count over validation
                         batches, summed across ranks
    multiple_choice.py   HellaSwag-format items scored by the log-likelihood of each ending

The model behind --model is read by gpt_dist.checkpoint.model_loader.load_model.
lm-eval-harness runs on a directory written by `gpt-dist convert to-hf` (README).
"""
