"""Validation loss is the token-weighted mean cross-entropy, also across ranks."""

import math
import socket

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from gpt_dist.evaluation.lm_loss import evaluate_loss
from gpt_dist.model.gpt import IGNORE_INDEX


def _batches(vocab: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Three batches of different sizes; some labels ignored, so batches count different tokens."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for b, t in ((2, 16), (3, 16), (1, 16)):
        tok = torch.randint(0, vocab, (b, t + 1), generator=g)
        labels = tok[:, 1:].clone()
        labels[0, : 3 * b] = IGNORE_INDEX
        out.append({"input_ids": tok[:, :-1], "labels": labels})
    return out


def _direct_mean_loss(model, batches) -> tuple[float, int]:
    """Mean over every counted token of -log softmax(logits)[label], one token at a time."""
    total, n = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            logp = F.log_softmax(model(batch["input_ids"]).double(), dim=-1)
            for row, labels in zip(logp, batch["labels"]):
                for pos, label in enumerate(labels.tolist()):
                    if label != IGNORE_INDEX:
                        total -= row[pos, label].item()
                        n += 1
    return total / n, n


def test_loss_is_token_weighted_mean_of_direct_computation(tiny_model):
    batches = _batches(tiny_model.config.vocab_size)
    res = evaluate_loss(tiny_model, batches, torch.device("cpu"))
    expected, n = _direct_mean_loss(tiny_model, batches)
    assert res.tokens == n
    assert res.sequences == 6 and res.batches == 3
    assert res.loss == pytest.approx(expected, rel=1e-6)
    assert res.perplexity == pytest.approx(math.exp(expected), rel=1e-6)
    # The mean of per-batch means differs here: the batches count different numbers of tokens.
    per_batch = [evaluate_loss(tiny_model, [b], torch.device("cpu")).loss for b in batches]
    assert abs(sum(per_batch) / len(per_batch) - res.loss) > 1e-4


def test_no_counted_tokens_is_an_error(tiny_model):
    batch = _batches(tiny_model.config.vocab_size)[0]
    batch["labels"][:] = IGNORE_INDEX
    with pytest.raises(ValueError, match="no target tokens"):
        evaluate_loss(tiny_model, [batch], torch.device("cpu"))


def _rank_main(rank: int, world: int, port: int, state: dict, out):
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from gpt_dist.config import ModelConfig, resolve_model_config
        from gpt_dist.model.gpt import GPT

        model = GPT(resolve_model_config(ModelConfig(preset="tiny")))
        model.load_state_dict(state)
        batches = _batches(model.config.vocab_size)[rank::world]  # each rank its share
        res = evaluate_loss(model, batches, torch.device("cpu"))
        out.put((rank, res.to_dict()))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_give_the_single_process_result(tiny_model):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    mp.start_processes(_rank_main, args=(2, port, state, out), nprocs=2, start_method="spawn", join=True)
    results = dict(out.get(timeout=60) for _ in range(2))
    single = evaluate_loss(tiny_model, _batches(tiny_model.config.vocab_size), torch.device("cpu")).to_dict()
    for rank in (0, 1):  # every rank holds the global figures
        assert results[rank]["tokens"] == single["tokens"]
        assert results[rank]["sequences"] == single["sequences"]
        assert results[rank]["loss"] == pytest.approx(single["loss"], rel=1e-6)
