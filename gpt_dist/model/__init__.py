"""The GPT-2 model (gpt_dist.model.gpt.GPT): a plain nn.Module that knows nothing of parallelism.

Import from the submodules: `from gpt_dist.model.gpt import GPT`. This file stays import-free
so that gpt_dist.config can read the presets without loading torch.
"""
