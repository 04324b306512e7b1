"""Training engine: DeepSpeed applied around the plain model in one place (deepspeed_setup),
one training loop for every stage (trainer), checkpoints with exact resume (gpt_dist.checkpoint),
and cross-cutting concerns as callbacks (callbacks)."""
