"""Keeping users' words out of the model's control vocabulary.

Why escape rather than trust the tokenizer: a tokenizer turns the *string* `<|im_start|>`
into the control token wherever it appears, so a Discord message, a display name or a
correction that contains `<|im_end|>\\n<|im_start|>system ...` would become a real system
turn at inference and a fake turn boundary in training. Every piece of text that came from a
person passes through `SpecialTokenGuard.escape` before it is rendered: a zero-width
space (U+200B) goes after the first character of each marker, so the text still reads
the same but can no longer form a control token. The guard knows the tokenizer's own
special and added tokens (when there is a tokenizer) and, always, the generic chat-template
marker shapes (`<|...|>`, `<｜...｜>`, `[INST]`, `<<SYS>>`), so engines without a local
tokenizer (an OpenAI-compatible server) are covered too.

Uploaded datasets are *refused* instead (`find`), with the line and the marker named: a file
is the uploader's to fix, while a chat message or correction must never be lost.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Iterable

from assistant.llm.base import Message

BREAK = "\u200b"  # zero-width space: invisible, and no tokenizer merges it into a control token
GENERIC_MARKERS = (r"<\|[^<>|\s]{1,64}\|>", r"<｜[^<>｜\s]{1,64}｜>", r"\[/?INST\]", r"<</?SYS>>",
                   r"<(?:start|end)_of_turn>", r"</?s>")


@dataclass(frozen=True)
class SpecialTokenGuard:
    """Finds and neutralises control-token strings in text that came from users."""

    pattern: re.Pattern[str]

    @classmethod
    def for_markers(cls, markers: Iterable[str] = ()) -> "SpecialTokenGuard":
        literal = sorted({m for m in markers if len(m) > 1}, key=len, reverse=True)
        parts = [re.escape(m) for m in literal] + list(GENERIC_MARKERS)
        return cls(re.compile("|".join(parts)))

    @classmethod
    def for_tokenizer(cls, tokenizer: object | None) -> "SpecialTokenGuard":
        """The tokenizer's special and added tokens plus the generic markers."""
        markers: set[str] = set()
        if tokenizer is not None:
            markers.update(str(t) for t in getattr(tokenizer, "all_special_tokens", []) or [])
            added = getattr(tokenizer, "get_added_vocab", None)
            if callable(added):
                markers.update(str(t) for t in added())
        return cls.for_markers(markers)

    def find(self, text: str) -> str | None:
        """The first control-token string in `text`, or None."""
        match = self.pattern.search(text)
        return match.group(0) if match else None

    def escape(self, text: str) -> str:
        """`text` with every control-token string broken by a zero-width space (idempotent)."""
        return self.pattern.sub(lambda m: m.group(0)[0] + BREAK + m.group(0)[1:], text)

    def escape_messages(self, messages: list[Message]) -> list[Message]:
        return [{"role": m["role"], "content": self.escape(m["content"])} for m in messages]


DEFAULT_GUARD = SpecialTokenGuard.for_markers()


@functools.lru_cache(maxsize=8)
def guard_for(tokenizer: object) -> SpecialTokenGuard:
    """The guard of one tokenizer, built once (training tokenizes rows one by one)."""
    return SpecialTokenGuard.for_tokenizer(tokenizer)


def escape_user_text(text: str) -> str:
    """The generic guard, for places that render prompts without a tokenizer at hand."""
    return DEFAULT_GUARD.escape(text)


def system_messages(system_prompt: str, notes: list[str] | None = None) -> list[Message]:
    """The one system message every prompt starts with: the configured prompt, then any taught
    facts retrieved for this question (`assistant/memory.py`), escaped because people wrote them."""
    text = system_prompt.strip()
    if notes:
        facts = "\n".join(f"- {escape_user_text(n)}" for n in notes)
        text = (text + "\n\n" if text else "") + "Facts you were taught (use them when they answer the question):\n" + facts
    return [{"role": "system", "content": text}] if text else []
