"""gpt_dist: DeepSpeed ZeRO pre-training, fine-tuning and conversion for GPT-2 models."""

__version__ = "0.1.0"
