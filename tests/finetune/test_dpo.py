"""DPO on the sample preference set, started from the SFT checkpoint: log 2 at step 0, then the
chosen replies pull ahead; with the NLL term (finetune.dpo_nll_weight) the chosen replies also
stay likely; bad pairs are counted and never trained on."""

from __future__ import annotations

import json
import math

import pytest
import torch
from finetune_helpers import one_thread, tiny_config, train_metrics

from gpt_dist.checkpoint.model_loader import load_init_weights
from gpt_dist.config import ConfigError
from gpt_dist.engine.distributed import DistInfo
from gpt_dist.finetune.chat_template import DEFAULT_CHAT_TEMPLATE, ChatTemplate
from gpt_dist.finetune.data_report import DataReport
from gpt_dist.finetune.dpo import chosen_nll, dpo_loss
from gpt_dist.finetune.dpo_data import load_dpo_pairs
from gpt_dist.finetune.objectives import DPO
from gpt_dist.model.gpt import GPT

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
DPO_STEPS = 30


def test_loss_is_the_papers_formula():
    policy = torch.tensor([-3.0, -5.0, -4.0, -4.5])  # chosen x2, then rejected x2
    ref = torch.tensor([-3.5, -5.0, -3.0, -4.0])
    loss, chosen, rejected = dpo_loss(policy, ref, beta=0.1)
    torch.testing.assert_close(chosen, torch.tensor([0.05, 0.0]))
    torch.testing.assert_close(rejected, torch.tensor([-0.1, -0.05]))
    want = [-math.log(1 / (1 + math.exp(-(0.05 + 0.1)))), -math.log(1 / (1 + math.exp(-0.05)))]
    torch.testing.assert_close(loss, torch.tensor(want))
    same, _, _ = dpo_loss(policy, policy, beta=0.1)
    torch.testing.assert_close(same, torch.full((2,), math.log(2)))


def test_nll_term_is_each_chosen_replys_per_token_mean():
    # 2 pairs: chosen replies of 3 and 1 labelled tokens, then the rejected ones
    nll = torch.tensor([[0.0, 1.0, 2.0, 3.0], [0.0, 0.0, 0.0, 4.0], [9.0, 9.0, 9.0, 9.0], [9.0, 9.0, 9.0, 9.0]])
    labels = torch.tensor([[-100, 5, 6, 7], [-100, -100, -100, 8], [1, 1, 1, 1], [1, 1, 1, 1]])
    nll = nll * (labels != -100)
    torch.testing.assert_close(chosen_nll(nll, labels), torch.tensor([2.0, 4.0]))  # not (1+2+3+4)/4 for both


class _FixedNLL(torch.nn.Module):
    """A "model" whose per-token NLL is a given table (reduction="none"), to check the loss's arithmetic."""

    def __init__(self, nll):
        super().__init__()
        self.nll = nll

    def forward(self, input_ids, labels, reduction):
        assert reduction == "none"
        return self.nll * (labels != -100)


def test_nll_weight_adds_alpha_times_the_chosen_nll_to_each_pair():
    nll = torch.tensor([[0.5, 1.5], [2.0, 2.0], [1.0, 1.0], [3.0, 1.0]])  # chosen x2, then rejected x2
    labels = torch.tensor([[1, 2], [-100, 3], [1, 2], [4, 5]])
    batch = {"input_ids": torch.zeros_like(labels), "labels": labels, "ref_logps": torch.tensor([-2.0, -2.0, -2.0, -4.0])}
    plain, rpo = DPO(beta=0.1), DPO(beta=0.1, nll_weight=0.5)
    base = plain.loss(_FixedNLL(nll), batch)
    out = rpo.loss(_FixedNLL(nll), batch)
    preference, _, _ = dpo_loss(-(nll * (labels != -100)).sum(-1), batch["ref_logps"], beta=0.1)
    torch.testing.assert_close(base.loss, preference.sum())
    torch.testing.assert_close(out.loss, preference.sum() + 0.5 * (1.0 + 2.0))  # means 1.0 and 2.0
    # both log the NLL (a sum over the pairs, like every metric) and the preference term alone
    for o in (base, out):
        assert o.metrics["chosen_nll"].item() == pytest.approx(3.0)
        assert o.metrics["preference_loss"].item() == pytest.approx(preference.sum().item())
    loss, pairs, metrics = rpo.eval_loss(_FixedNLL(nll), batch)  # validation: the same objective
    torch.testing.assert_close(loss, out.loss)
    assert pairs.item() == 2 and metrics.keys() == out.metrics.keys()


def test_negative_nll_weight_is_a_config_error(tmp_path, tokenizer_dir, sample_files, sft_run):
    with pytest.raises(ConfigError, match="finetune.dpo_nll_weight"):
        dpo_config(tmp_path, tokenizer_dir, sft_run, sample_files["dpo_train"], extra=["finetune.dpo_nll_weight=-1"])


def dpo_config(tmp_path, tokenizer_dir, sft_run, train, extra=()):
    return tiny_config(tmp_path / "run", "dpo", tokenizer_dir, [train], steps=DPO_STEPS, lr=1e-3,
                       extra=[f"checkpoint.init_from={sft_run / 'ckpt'}", "train.global_batch_size=8",
                              "train.warmup_fraction=0.0", *extra])


def test_policy_equal_to_reference_gives_log_2(tmp_path, tokenizer_dir, tokenizer, sft_run, sample_files):
    cfg = dpo_config(tmp_path, tokenizer_dir, sft_run, sample_files["dpo_train"])
    stage = DPO(beta=cfg.finetune.dpo_beta)
    loader = stage.train_loader(cfg, CPU, tokenizer)
    assert stage.chat_template == DEFAULT_CHAT_TEMPLATE  # taken over from the SFT checkpoint
    policy = GPT(cfg.model)
    load_init_weights(policy, cfg.checkpoint.init_from, cfg.model)
    stage.start(policy, CPU)  # the reference is the policy before its first update
    batch = next(loader)
    with torch.no_grad():
        out = stage.loss(policy.eval(), batch)
    pairs = stage.count(batch).units
    assert out.loss.item() / pairs.item() == pytest.approx(math.log(2), abs=1e-5)  # a sum over the pairs
    assert out.metrics["reward_margin"].item() == pytest.approx(0.0, abs=1e-5)


@pytest.fixture(scope="module")
def plain_dpo(tmp_path_factory, tokenizer_dir, sft_run, sample_files):
    """DPO_STEPS steps of plain DPO (no NLL term) from the SFT run, validated on the sample's
    validation pairs: (its TrainResult, its run dir). Validation leaves the policy as it is, so
    its training rows are those of the same run without it."""
    from gpt_dist.engine.trainer import train

    tmp = tmp_path_factory.mktemp("plain_dpo")
    cfg = dpo_config(tmp, tokenizer_dir, sft_run, sample_files["dpo_train"],
                     extra=[f"data.val={sample_files['dpo_val']}"])
    with one_thread():
        result = train(cfg)
    return result, tmp / "run"


def test_training_separates_chosen_from_rejected(plain_dpo):
    result, run_dir = plain_dpo
    assert result.step == DPO_STEPS
    rows = train_metrics(run_dir)
    assert rows[0]["step"] == 1 and rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert {"reward_accuracy", "reward_margin", "reward_chosen", "reward_rejected"} <= set(rows[-1])
    first, last = rows[:5], rows[-5:]

    def mean(rs, key):
        return sum(r[key] for r in rs) / len(rs)

    assert mean(last, "reward_accuracy") > 0.9
    assert mean(last, "reward_margin") > mean(first, "reward_margin") + 1.0
    assert mean(last, "reward_chosen") > mean(last, "reward_rejected")
    val = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"val"' in line]
    assert val[-1]["loss"] < math.log(2)
    assert "perplexity" not in val[-1]  # exp(DPO loss) is no perplexity
    # validation logs the rewards too, as shares of the validation pairs
    assert 0.0 <= val[-1]["reward_accuracy"] <= 1.0 and val[-1]["chosen_nll"] > 0
    assert {"reward_margin", "reward_chosen", "reward_rejected", "preference_loss"} <= set(val[-1])


def test_nll_term_keeps_the_chosen_replies_likely(tmp_path, tokenizer_dir, sft_run, sample_files, plain_dpo):
    """Same run with finetune.dpo_nll_weight: 1: the pairs still separate, and the chosen replies'
    NLL ends no higher than it started, where plain DPO lets it rise."""
    from gpt_dist.engine.trainer import train

    cfg = dpo_config(tmp_path, tokenizer_dir, sft_run, sample_files["dpo_train"], extra=["finetune.dpo_nll_weight=1.0"])
    with one_thread():
        train(cfg)

    def mean(rs, key):
        return sum(r[key] for r in rs) / len(rs)

    plain, rpo = train_metrics(plain_dpo[1]), train_metrics(tmp_path / "run")
    assert rpo[0]["loss"] == pytest.approx(math.log(2) + rpo[0]["chosen_nll"], abs=1e-4)
    assert rpo[0]["preference_loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert mean(rpo[-5:], "reward_accuracy") > 0.9
    assert mean(rpo[-5:], "chosen_nll") <= mean(rpo[:5], "chosen_nll")
    assert mean(rpo[-5:], "chosen_nll") < mean(plain[-5:], "chosen_nll")


BAD_PAIRS = {
    "chosen_equals_rejected": {"prompt": "Say hi. MARKER", "chosen": "Hi.", "rejected": "Hi. "},
    "unknown_format": {"prompt": "Say hi. MARKER", "chosen": "Hi."},
    "unknown_role": {"messages": [{"role": "robot", "content": "MARKER"}], "chosen": "a", "rejected": "b"},
    "bad_prompt": {"messages": [{"role": "user", "content": "MARKER"}, {"role": "assistant", "content": "x"}],
                   "chosen": "a", "rejected": "b"},
    "prompt_longer_than_context": {"prompt": "MARKER " + "word " * 400, "chosen": "a", "rejected": "b"},
    "reply_does_not_fit": {"prompt": "Say hi.", "chosen": "Hi.", "rejected": "MARKER " + "no " * 400},
    "end_marker_in_content": {"prompt": "Say hi.", "chosen": "Hi.<|endoftext|>MARKER", "rejected": "b"},
    "bad_content": {"prompt": "Say hi.", "chosen": "", "rejected": "MARKER"},
}


def test_bad_pairs_are_counted_and_never_trained_on(tmp_path, tokenizer):
    good = [{"prompt": f"Question {i}?", "chosen": f"Right {i}.", "rejected": f"Wrong {i}."} for i in range(4)]
    lines = [json.dumps(p) for p in good + list(BAD_PAIRS.values())] + ["not json"]
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    report = DataReport("dpo", "train")
    tpl = ChatTemplate(DEFAULT_CHAT_TEMPLATE, tokenizer)
    pairs = load_dpo_pairs([(str(tmp_path / "pairs.jsonl"), 1.0)], tpl, 128, report, seed=0)
    assert report.dropped == {**{k: 1 for k in BAD_PAIRS}, "invalid_json": 1}
    assert len(pairs) == report.kept == 4
    text = "".join(tokenizer.decode(p.chosen_ids.tolist()) + tokenizer.decode(p.rejected_ids.tolist()) for p in pairs)
    assert "MARKER" not in text and "Right 3." in text
    # the loss is on the reply only: both sequences share the prompt, and only the replies are labelled
    p = pairs[0]
    assert tokenizer.decode(p.chosen_ids[p.chosen_trained].tolist()) == " Right 0." + tokenizer.eot_token
    assert tokenizer.decode(p.rejected_ids[p.rejected_trained].tolist()) == " Wrong 0." + tokenizer.eot_token


def test_dpo_without_starting_weights_is_a_config_error(tmp_path, tokenizer_dir, sample_files):
    with pytest.raises(ConfigError, match="checkpoint.init_from: stage: dpo needs the starting weights"):
        tiny_config(tmp_path, "dpo", tokenizer_dir, [sample_files["dpo_train"]])


def test_reference_is_scored_once_and_a_resume_reads_it_from_the_checkpoint(tmp_path, tokenizer_dir, sft_run,
                                                                           sample_files, monkeypatch):
    import gpt_dist.finetune.dpo as dpo
    from gpt_dist.checkpoint.layout import latest_complete_tag
    from gpt_dist.engine.trainer import train

    calls = []
    real = dpo.reference_logps
    monkeypatch.setattr(dpo, "reference_logps", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = dpo_config(tmp_path, tokenizer_dir, sft_run, sample_files["dpo_train"],
                       extra=["train.exit_after_steps=2", "checkpoint.every_steps=2"])
    with one_thread():
        train(first)
    assert len(calls) == 1
    ckpt = tmp_path / "run" / "ckpt"
    meta = json.loads((ckpt / latest_complete_tag(ckpt) / "gpt_dist.json").read_text())
    table = meta["client_state"]["objective"]["reference_logps"]["train"]
    assert len(table) > 0 and all(len(row) == 2 and row[0] < 0 and row[1] < 0 for row in table)
    with one_thread():
        result = train(dpo_config(tmp_path, tokenizer_dir, sft_run, sample_files["dpo_train"]))
    assert result.step == DPO_STEPS and len(calls) == 1  # not scored again
