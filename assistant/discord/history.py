"""Turning Discord messages into the chat turns the model sees (pure; tested without Discord).

The context of an answer is the reply chain when the message replies to something, the
thread or channel's recent messages otherwise. Other bots, commands and corrections are
not conversation, so they are left out; consecutive messages of one side are merged so
the model sees a clean user/assistant alternation.
"""

from __future__ import annotations

from dataclasses import dataclass

from assistant.conversation import trim_history
from assistant.discord.policy import correction_text
from assistant.llm.base import ChatBackend, Message
from assistant.prompting import escape_user_text, system_messages


@dataclass(frozen=True)
class Said:
    """One earlier Discord message, reduced to what matters for context."""

    author_is_self: bool
    author_is_bot: bool
    text: str
    to_me: bool = False  # it mentions the bot: a question the bot answers on its own
    id: int = 0
    reply_to: int | None = None  # the message this one replies to


def to_turns(said: list[Said], *, command_prefix: str) -> list[Message]:
    """Chat turns (oldest first) from earlier messages (oldest first).

    Questions put to the bot that it has not replied to yet are waiting for their own answers
    (people asked at the same moment): they are left out, or the prompt would carry several
    questions glued into one and the model would answer the wrong one or a mix (measured: 3 of
    15 questions asked at once in one channel answered right, 15 of 15 one after another)."""
    answered = {item.reply_to for item in said if item.author_is_self and item.reply_to is not None}
    said = [item for item in said if not (item.to_me and item.id not in answered)]
    turns: list[Message] = []
    for item in said:
        text = escape_user_text(item.text.strip())
        if not text:
            continue
        if item.author_is_self:
            role = "assistant"
        elif item.author_is_bot:
            continue
        elif (command_prefix and text.startswith(command_prefix)) or correction_text(text) is not None:
            continue
        else:
            role = "user"
        if turns and turns[-1]["role"] == role:
            turns[-1] = {"role": role, "content": turns[-1]["content"] + "\n" + text}
        else:
            turns.append({"role": role, "content": text})
    while turns and turns[0]["role"] == "assistant":
        turns.pop(0)  # a history starts with the user, as chat templates expect
    return turns


def build_prompt(backend: ChatBackend, *, system_prompt: str, earlier: list[Message], question: str,
                 context_tokens: int, reply_tokens: int, notes: list[str] | None = None) -> list[Message]:
    """System prompt (+ taught facts for this question) + as much recent history as fits + the
    question, within the token budget."""
    system = system_messages(system_prompt, notes)
    question = escape_user_text(question)
    turns = list(earlier)
    if turns and turns[-1]["role"] == "user":
        turns[-1] = {"role": "user", "content": turns[-1]["content"] + "\n" + question}
    else:
        turns.append({"role": "user", "content": question})
    budget = max(context_tokens - reply_tokens, 1)
    return trim_history(system, turns, budget, backend.count_tokens)
