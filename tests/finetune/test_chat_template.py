"""Chat templates: where replies start and end, the end-marker rule, and which template a run uses."""

from __future__ import annotations

import pytest

from gpt_dist.config import ConfigError
from gpt_dist.finetune.chat_template import (
    DEFAULT_CHAT_TEMPLATE,
    ChatTemplate,
    TemplateError,
    resolve_chat_template,
)

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "My favourite colour is red."},
    {"role": "assistant", "content": "Noted: your favourite colour is red."},
    {"role": "user", "content": "What is my favourite colour?"},
    {"role": "assistant", "content": "Your favourite colour is red."},
]

# ChatML-style markers as plain text, closing each turn with the tokenizer's end-of-text.
CUSTOM = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% else %}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def trained_text(tok, enc) -> str:
    return tok.decode([i for i, t in zip(enc.ids, enc.trained) if t])


@pytest.mark.parametrize("source, replies", [
    # the built-in template puts "Assistant:" before the reply, so the reply starts with its space
    (DEFAULT_CHAT_TEMPLATE, [" Noted: your favourite colour is red.", " Your favourite colour is red."]),
    (CUSTOM, ["Noted: your favourite colour is red.", "Your favourite colour is red."]),
])
def test_loss_covers_exactly_the_replies_and_their_end_markers(tokenizer, source, replies):
    tpl = ChatTemplate(source, tokenizer)
    enc = tpl.encode(CONVERSATION)
    eot = tokenizer.eot_token
    assert trained_text(tokenizer, enc) == eot.join(replies) + eot
    assert enc.ids.count(tokenizer.eot_id) == 2 and len(enc.turn_ends) == 2
    assert tokenizer.decode(enc.ids) == tpl.render(CONVERSATION)  # the pieces add up to the rendering


@pytest.mark.parametrize("source", [DEFAULT_CHAT_TEMPLATE, CUSTOM])
def test_generation_prompt_is_a_prefix_of_the_training_ids(tokenizer, source):
    """What `generate --chat` / `chat` feed the model is exactly what SFT trained it on."""
    tpl = ChatTemplate(source, tokenizer)
    full = tpl.encode(CONVERSATION)
    for upto in (2, 4):
        prompt = tpl.encode(CONVERSATION[:upto], train="none", add_generation_prompt=True)
        assert full.ids[: len(prompt.ids)] == prompt.ids
        assert full.trained[len(prompt.ids)]  # the very next token is the reply's first
        assert not any(prompt.trained)


def test_train_last_puts_the_loss_on_the_final_reply_only(tokenizer):
    tpl = ChatTemplate(DEFAULT_CHAT_TEMPLATE, tokenizer)
    enc = tpl.encode(CONVERSATION, train="last")
    assert trained_text(tokenizer, enc) == " Your favourite colour is red." + tokenizer.eot_token


def test_template_without_end_marker_is_a_clear_error(tokenizer, tmp_path):
    path = tmp_path / "no_end.jinja"
    path.write_text(
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    source, origin = resolve_chat_template(str(path), None)
    with pytest.raises(ConfigError) as e:
        ChatTemplate(source, tokenizer, origin)
    msg = str(e.value)
    assert f"finetune.chat_template={path}" in msg and "end marker" in msg and "eos_token" in msg


def test_template_whose_generation_prompt_does_not_match_the_reply_is_an_error(tokenizer):
    bad = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}{% if m['role'] == 'assistant' %}{{ eos_token }}"
        "{% endif %}\n{% endfor %}{% if add_generation_prompt %}Bot:{% endif %}"
    )
    with pytest.raises(TemplateError, match="generation prompt"):
        ChatTemplate(bad, tokenizer, "finetune.chat_template=bad.jinja")


def test_invalid_jinja_names_the_line(tokenizer):
    with pytest.raises(TemplateError, match=r"x.jinja: not a valid Jinja template \(line 1"):
        ChatTemplate("{% for m in messages %}{{ m['content'] }", tokenizer, "x.jinja")


def test_which_template_a_run_uses(tmp_path):
    assert resolve_chat_template(None, None)[0] == DEFAULT_CHAT_TEMPLATE
    assert resolve_chat_template("default", "anything")[0] == DEFAULT_CHAT_TEMPLATE
    (tmp_path / "t.jinja").write_text(CUSTOM)
    assert resolve_chat_template(str(tmp_path / "t.jinja"), None) == (CUSTOM, f"finetune.chat_template={tmp_path / 't.jinja'}")
    with pytest.raises(TemplateError, match="no such file"):
        resolve_chat_template(str(tmp_path / "missing.jinja"), None)


def test_a_fine_tuned_checkpoint_passes_its_template_on(sft_run):
    """SFT from an SFT checkpoint (or DPO) keeps the template of checkpoint.init_from by default."""
    source, origin = resolve_chat_template(None, str(sft_run / "ckpt"))
    assert source == DEFAULT_CHAT_TEMPLATE and "init_from" in origin
