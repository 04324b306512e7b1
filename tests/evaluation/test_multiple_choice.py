"""Multiple-choice scoring: known answers from a model whose predictions are computable,
agreement with a direct per-sequence computation, the file format's errors, and the CLI."""

import json

import pytest
import torch
import torch.nn.functional as F

from gpt_dist.cli import main
from gpt_dist.config import ModelConfig, resolve_model_config
from gpt_dist.errors import UserError
from gpt_dist.evaluation.multiple_choice import (
    MCItem,
    encode_item,
    ending_loglikelihoods,
    read_mc_file,
    score_items,
)
from gpt_dist.model.gpt import GPT

# Boosted next-token logits of the constant model below; every other token has logit 0.
BOOST = {" yes": 10.0, " house": 8.0, " nevertheless": 6.0}

# With log p(token) fixed: " yes" -1.23, " house" -3.23, " nevertheless" -5.23, others -11.23.
#   item 1: every rule picks "yes" (label 1)
#   item 2: "house" wins the sum (-3.2 > 4 x -1.2); per token and per character pick "yes yes yes yes"
#   item 3: one token each, so sum and mean pick "house"; per character (-3.23/5 < -5.23/12)
#           picks "nevertheless"
KNOWN_ITEMS = [
    {"ctx": "Is it?", "endings": ["no", "yes", "maybe", "never"], "label": 1},
    {"ctx": "Say it:", "endings": ["house", "yes yes yes yes"], "label": 1},
    {"ctx": "Then", "endings": ["house", "nevertheless"], "label": 1},
]


def constant_model(tokenizer) -> GPT:
    """A GPT whose next-token distribution is the same after any context: the blocks add
    nothing to the residual stream and ln_f outputs its bias e_0, so logits = wte[:, 0]."""
    torch.manual_seed(0)
    model = GPT(resolve_model_config(ModelConfig(preset="tiny")))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "c_proj" in name:
                p.zero_()
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.zero_()
        model.transformer.ln_f.bias[0] = 1.0
        model.transformer.wte.weight[:, 0] = 0.0
        for text, logit in BOOST.items():
            (tok,) = tokenizer.encode(text)
            model.transformer.wte.weight[tok, 0] = logit
    return model.eval()


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_known_answers_for_sum_token_mean_and_char_mean(tmp_path, gpt2_tokenizer):
    model = constant_model(gpt2_tokenizer)
    assert len(gpt2_tokenizer.encode(" yes yes yes yes")) == 4
    items = read_mc_file(_write_jsonl(tmp_path / "mc.jsonl", KNOWN_ITEMS))
    res = score_items(model, gpt2_tokenizer, items, torch.device("cpu"), micro_batch=3)
    assert res["items"] == 3
    assert res["acc"] == pytest.approx(1 / 3)
    assert res["acc_norm"] == pytest.approx(2 / 3)
    assert res["acc_norm_chars"] == pytest.approx(3 / 3)


def test_ending_loglikelihoods_equal_direct_computation(tiny_model, gpt2_tokenizer):
    items = [
        MCItem(ctx="The cat sat on the", endings=["mat.", "roof of the old house", "dog"], label=0),
        MCItem(ctx="", endings=["Hello world", "Goodbye"], label=0),  # empty context: end-of-text first
        MCItem(ctx="word " * 80, endings=["end", "finish here"], label=1),  # longer than block_size 64
    ]
    encoded = [e for item in items for e in encode_item(item, gpt2_tokenizer, tiny_model.config.block_size)]
    assert encoded[3].tokens[0] == gpt2_tokenizer.eot_id
    assert all(len(e.tokens) <= tiny_model.config.block_size + 1 for e in encoded)
    got = ending_loglikelihoods(tiny_model, encoded, torch.device("cpu"), micro_batch=3)
    for e, ll in zip(encoded, got):
        seq = torch.tensor(e.tokens)
        with torch.no_grad():
            logp = F.log_softmax(tiny_model(seq[None, :-1])[0].double(), dim=-1)
        positions = range(len(seq) - 1 - e.n_ending, len(seq) - 1)
        direct = sum(logp[p, seq[p + 1]].item() for p in positions)
        assert ll == pytest.approx(direct, abs=1e-4)


def test_context_and_ending_join_with_one_space(gpt2_tokenizer):
    (a,) = encode_item(MCItem(ctx="A man walks", endings=["home", "x"], label=0), gpt2_tokenizer, 64)[:1]
    assert a.tokens == gpt2_tokenizer.encode("A man walks") + gpt2_tokenizer.encode(" home")
    assert a.n_ending == len(gpt2_tokenizer.encode(" home")) and a.n_chars == 4
    # Trailing whitespace of the context moves to the ending, never a lone trailing space token.
    (b,) = encode_item(MCItem(ctx="A man walks ", endings=["home", "x"], label=0), gpt2_tokenizer, 64)[:1]
    assert b.tokens[: len(gpt2_tokenizer.encode("A man walks"))] == gpt2_tokenizer.encode("A man walks")


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"ctx": "a", "endings": ["b", "c"], "label": 2}', "field 'label' must be an integer index"),
        ('{"ctx": "a", "endings": ["b"], "label": 0}', "field 'endings' must be a list of at least 2"),
        ('{"endings": ["b", "c"], "label": 0}', "field 'ctx' must be a string"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_items_name_line_and_field(tmp_path, line, message):
    f = tmp_path / "mc.jsonl"
    f.write_text('{"ctx": "ok", "endings": ["b", "c"], "label": "1"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=f"mc.jsonl:2: {message}"):
        read_mc_file(f)


def test_cli_mc_on_hf_dir_gives_known_answers(tmp_path, gpt2_tokenizer, hf_dir_of, capsys):
    hf_dir = hf_dir_of(constant_model(gpt2_tokenizer))
    mc = _write_jsonl(tmp_path / "mc.jsonl", KNOWN_ITEMS)
    assert main(["eval", "--model", str(hf_dir), "--mc", str(mc), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["source"] == "huggingface"
    assert (out["mc"]["acc"], out["mc"]["acc_norm"], out["mc"]["acc_norm_chars"]) == pytest.approx((1 / 3, 2 / 3, 1.0))
