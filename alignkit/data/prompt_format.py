"""How a question (and optional few-shot pairs) becomes prompt text, for training and evaluation.

One home for the prompt rendering so that a model fine-tuned by alignkit is evaluated with the
exact format it was trained on. Modes follow ``shared/design/benchmarks.md`` §1.4:

* ``chat``: the tokenizer's chat template (prompt rendered with ``add_generation_prompt=True``),
  optional system prompt and a pinned ``date_string`` (Llama-3 templates embed today's date).
* ``tags``: four literal tag strings plus an optional system prefix. Presets ``qa_plain``
  (``Question: {q}\\nAnswer: {a}``, the default for base models) and ``llama2_inst``
  (``[INST] {q} [/INST]{a}``). ``plain`` is an alias of ``qa_plain``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class PromptFormat:
    mode: Literal["chat", "tags"] = "tags"
    user_start: str = "Question: "
    user_end: str = "\n"
    asst_start: str = "Answer: "
    asst_end: str = "\n\n"  # separates few-shot pairs only
    system_prefix: str = ""
    system_prompt: str | None = None  # chat mode only
    date_string: str | None = None  # chat mode only

    PRESETS = ("chat", "qa_plain", "plain", "llama2_inst")

    @classmethod
    def preset(cls, name: str, **overrides) -> PromptFormat:
        if name == "chat":
            return cls(mode="chat", **overrides)
        if name in ("qa_plain", "plain"):
            return cls(**overrides)
        if name == "llama2_inst":
            return cls(user_start="[INST] ", user_end=" [/INST]", asst_start="", asst_end=" ", **overrides)
        raise ValueError(f"Unknown prompt format {name!r}; choose one of {', '.join(cls.PRESETS)}.")

    @classmethod
    def for_tokenizer(cls, tokenizer) -> PromptFormat:
        """``chat`` when the tokenizer has a chat template, else ``qa_plain``."""
        return cls.preset("chat" if getattr(tokenizer, "chat_template", None) else "qa_plain")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def _check_chat(self, tokenizer) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "PromptFormat mode 'chat' needs a tokenizer with a chat template, and this tokenizer "
                "has none. Set `tokenizer.chat_template`, or use a tag format such as "
                "PromptFormat.preset('qa_plain')."
            )

    def _chat_kwargs(self) -> dict:
        return {"date_string": self.date_string} if self.date_string else {}

    def _messages(self, question: str, fewshot: Sequence[tuple[str, str]]) -> list[dict]:
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        for q, a in fewshot:
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        return messages + [{"role": "user", "content": question}]

    def render_prompt(self, tokenizer, question: str, fewshot: Sequence[tuple[str, str]] = ()) -> str:
        """The text up to where the answer starts."""
        if self.mode == "chat":
            self._check_chat(tokenizer)
            return tokenizer.apply_chat_template(
                self._messages(question, fewshot),
                add_generation_prompt=True,
                tokenize=False,
                **self._chat_kwargs(),
            )
        shots = "".join(
            f"{self.user_start}{q}{self.user_end}{self.asst_start}{a}{self.asst_end}" for q, a in fewshot
        )
        return f"{self.system_prefix}{shots}{self.user_start}{question}{self.user_end}{self.asst_start}"

    def render_messages(self, tokenizer, messages: list[dict], *, add_generation_prompt: bool) -> str:
        """Render a conversational record (list of role/content dicts) with the chat template."""
        self._check_chat(tokenizer)
        if self.system_prompt and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": self.system_prompt}, *messages]
        return tokenizer.apply_chat_template(
            messages, add_generation_prompt=add_generation_prompt, tokenize=False, **self._chat_kwargs()
        )
