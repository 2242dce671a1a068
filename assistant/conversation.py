"""Conversations: the system prompt, the turns so far, and trimming them to the token budget.

Trimming is a pure function so it can be tested exhaustively: it always keeps the system
prompt and the newest user turn, drops whole exchanges oldest first, and never leaves an
assistant turn without the user turn it answered at the front.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

from assistant.errors import GenerationError
from assistant.llm.base import ChatBackend, GenerationOptions, Message
from assistant.prompting import escape_user_text, system_messages


TRIM_TO = 0.6  # once history must be trimmed, keep at most this share of the budget (see Conversation)


def trim_history(system: list[Message], turns: list[Message], budget: int,
                 count: Callable[[list[Message]], int], *, target: int | None = None) -> list[Message]:
    """The longest suffix of `turns` that, after `system`, fits in `budget` tokens.

    With `target` (< budget): when everything does not fit, trim further, to `target`, if the
    newest turn allows it. Raises GenerationError when even the system prompt and the last
    turn do not fit in `budget`.
    """
    if not turns:
        return list(system)
    if count(system + turns) <= budget:
        return system + turns
    if target is not None and target < budget:
        try:
            return _fitting_suffix(system, turns, target, count)
        except GenerationError:
            pass
    return _fitting_suffix(system, turns, budget, count)


def _fitting_suffix(system: list[Message], turns: list[Message], budget: int,
                    count: Callable[[list[Message]], int]) -> list[Message]:
    start = 0
    while start < len(turns):
        candidate = system + turns[start:]
        if count(candidate) <= budget:
            return candidate
        start += 1
        while start < len(turns) - 1 and turns[start]["role"] != "user":
            start += 1  # a kept history starts at a user turn
    raise GenerationError(
        f"The message is too long for the model's context ({budget} tokens with the system prompt); "
        "please shorten it.")


@dataclass
class Conversation:
    """One conversation's history (a terminal session, a Discord channel or thread, a voice call).

    When the history outgrows the budget it is cut to `TRIM_TO` of it, not just below it, and
    the cut is kept: the next turns then start with the same tokens, so the engine's prefix
    cache serves them, instead of every turn dropping one more exchange and being prefilled
    from scratch.
    """

    backend: ChatBackend
    system_prompt: str = ""
    context_tokens: int = 2048
    reply_tokens: int = 256
    turns: list[Message] = field(default_factory=list)
    notes: Callable[[str], list[str]] | None = None  # taught facts for a question (TeachingMemory.notes)

    def prompt_for(self, user_text: str, notes: list[str] | None = None) -> list[Message]:
        """`notes`: the taught facts recalled for `user_text` (see `reply`, which looks them up)."""
        turns = self.turns + [{"role": "user", "content": escape_user_text(user_text)}]
        budget = max(self.context_tokens - self.reply_tokens, 1)
        return trim_history(system_messages(self.system_prompt, notes), turns, budget, self.backend.count_tokens,
                            target=int(budget * TRIM_TO))

    async def reply(self, user_text: str, options: GenerationOptions | None = None) -> AsyncIterator[str]:
        """Stream the answer to `user_text`, then remember both turns (only if the reply finished)."""
        options = options or GenerationOptions(max_new_tokens=self.reply_tokens)
        # Recall embeds the question (tens of ms): off the event loop, as the chat cog does it.
        notes = await asyncio.to_thread(self.notes, user_text) if self.notes and user_text else None
        messages = self.prompt_for(user_text, notes)
        parts: list[str] = []
        async for delta in self.backend.stream(messages, options):
            parts.append(delta)
            yield delta
        self.turns = messages[1 if messages and messages[0]["role"] == "system" else 0:] + [{"role": "assistant", "content": "".join(parts).strip()}]

    def reset(self) -> None:
        self.turns.clear()
