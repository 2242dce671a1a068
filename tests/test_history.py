"""History trimming: the newest turns that fit, starting at a user turn, system prompt always kept."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from assistant.conversation import trim_history
from assistant.errors import GenerationError
from assistant.llm.base import Message


def words(messages: list[Message]) -> int:
    return sum(len(m["content"].split()) + 1 for m in messages)


SYSTEM: list[Message] = [{"role": "system", "content": "be brief"}]


def turn(role: str, n: int) -> Message:
    return {"role": role, "content": " ".join(["w"] * n)}


def test_everything_fits() -> None:
    turns = [turn("user", 2), turn("assistant", 2), turn("user", 2)]
    assert trim_history(SYSTEM, turns, 100, words) == SYSTEM + turns


def test_drops_oldest_exchange_first_and_starts_at_user() -> None:
    turns = [turn("user", 10), turn("assistant", 10), turn("user", 3), turn("assistant", 3), turn("user", 3)]
    kept = trim_history(SYSTEM, turns, 20, words)
    assert kept[0] == SYSTEM[0]
    assert kept[1:] == turns[2:]


def test_too_long_last_message_is_an_error() -> None:
    with pytest.raises(GenerationError, match="too long"):
        trim_history(SYSTEM, [turn("user", 500)], 50, words)


def test_trimming_goes_down_to_the_target_so_the_next_turns_keep_their_beginning() -> None:
    turns = [turn("user", 4), turn("assistant", 4)] * 5 + [turn("user", 4)]  # 11 turns of 5 words
    assert trim_history(SYSTEM, turns, 100, words, target=30) == SYSTEM + turns  # fits: untouched
    kept = trim_history(SYSTEM, turns, 50, words, target=30)
    assert words(kept) <= 30 and kept[1:] == turns[-5:]
    # the newest turn alone is over the target but within the budget: the budget decides
    big = [turn("user", 4), turn("assistant", 4), turn("user", 40)]
    assert trim_history(SYSTEM, big, 45, words, target=20) == SYSTEM + big[-1:]


async def test_a_conversation_keeps_its_cut_between_turns() -> None:
    """Past the budget the history is cut to TRIM_TO of it, and the next turn starts the same way."""
    from collections.abc import AsyncIterator

    from assistant.conversation import TRIM_TO, Conversation
    from assistant.llm.base import ChatBackend, GenerationOptions

    class Echo(ChatBackend):
        def count_tokens(self, messages: list[Message]) -> int:
            return words(messages)

        async def stream(self, messages: list[Message], options: GenerationOptions | None = None) -> AsyncIterator[str]:
            self.last = messages
            yield "four words of reply"

    backend = Echo()
    talk = Conversation(backend, system_prompt="be brief", context_tokens=110, reply_tokens=10)
    firsts = []
    for n in range(30):
        [_ async for _ in talk.reply(f"question number {n}")]
        assert words(backend.last) <= 100
        firsts.append(backend.last[1]["content"])
    changes = sum(1 for a, b in zip(firsts, firsts[1:]) if a != b)
    assert 0 < changes <= 30 * (1 - TRIM_TO) + 1  # cut rarely, not on every turn once full


@given(st.lists(st.tuples(st.sampled_from(["user", "assistant"]), st.integers(0, 30)), min_size=1, max_size=30),
       st.integers(5, 200), st.one_of(st.none(), st.integers(1, 200)))
def test_properties(spec: list[tuple[str, int]], budget: int, target: int | None) -> None:
    turns = [turn(role, n) for role, n in spec]
    try:
        kept = trim_history(SYSTEM, turns, budget, words, target=target)
    except GenerationError:
        assert words(SYSTEM + turns[-1:]) > budget  # only when even the newest turn cannot fit
        return
    assert words(kept) <= budget
    if target is not None and len(kept) < len(SYSTEM) + len(turns) and words(SYSTEM + turns[-1:]) <= target:
        assert words(kept) <= target
    assert kept[0] == SYSTEM[0]
    history = kept[1:]
    assert history == turns[len(turns) - len(history):]  # a suffix
    assert history[-1] == turns[-1]
    if len(history) < len(turns) and len(history) > 1:
        assert history[0]["role"] == "user"
