"""Multi-turn chat through a model's chat template.

Each turn encodes the whole conversation with the same code that built the SFT samples
(ChatTemplate.encode with the generation prompt), so the model sees exactly the token layout
it was trained on, and the reply ends at its end-of-text token. When the conversation no
longer leaves room for a reply within the model's block_size, the oldest exchanges are
dropped (a system message is kept).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gpt_dist.errors import UserError
from gpt_dist.finetune.chat_template import ChatTemplate, check_messages
from gpt_dist.finetune.data_report import BadSample
from gpt_dist.generation.decoding import Generated, generate
from gpt_dist.generation.token_sampling import SamplingParams


@dataclass
class ChatSession:
    model: object  # GPT
    template: ChatTemplate
    params: SamplingParams
    system: str | None = None
    messages: list[dict[str, str]] = field(default_factory=list)
    dropped_turns: int = 0  # user/assistant messages dropped to fit the context
    last: Generated | None = None

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        return self.template.encode(messages, train="none", add_generation_prompt=True).ids

    def _conversation(self) -> list[dict[str, str]]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.messages

    def reply(self, user_text: str) -> str:
        """The assistant's answer to `user_text`; both are appended to the conversation.
        `last` then holds the generated tokens and why generation stopped."""
        try:
            check_messages([{"role": "user", "content": user_text}], self.template.end_marker)
        except BadSample as e:
            raise UserError(f"message not sent: {e.detail}") from None
        self.messages.append({"role": "user", "content": user_text})
        room = self.model.config.block_size - min(self.params.max_new_tokens, self.model.config.block_size // 2)
        ids = self.prompt_ids(self._conversation())
        while len(ids) > room and len(self.messages) > 1:
            # drop the oldest exchange (user + assistant), keeping the new message
            cut = 2 if len(self.messages) > 2 and self.messages[1]["role"] == "assistant" else 1
            del self.messages[:cut]
            self.dropped_turns += cut
            ids = self.prompt_ids(self._conversation())
        if len(ids) >= self.model.config.block_size:
            self.messages.pop()
            raise UserError(
                f"message not sent: it takes {len(ids)} tokens with the template, the model reads at most "
                f"{self.model.config.block_size}; send a shorter message"
            )
        self.last = generate(self.model, [ids], self.params, self.template.eot_id)[0]
        # Templates put the separator (e.g. the space after "Assistant:") in their own text, so
        # the stored content is stripped: re-rendered, it gives back the generated tokens.
        text = self.template.tokenizer.decode(self.last.tokens).strip()
        self.messages.append({"role": "assistant", "content": text})
        return text

    def reset(self) -> None:
        self.messages.clear()
        self.dropped_turns = 0
