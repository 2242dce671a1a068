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


@given(st.lists(st.tuples(st.sampled_from(["user", "assistant"]), st.integers(0, 30)), min_size=1, max_size=30),
       st.integers(5, 200))
def test_properties(spec: list[tuple[str, int]], budget: int) -> None:
    turns = [turn(role, n) for role, n in spec]
    try:
        kept = trim_history(SYSTEM, turns, budget, words)
    except GenerationError:
        assert words(SYSTEM + turns[-1:]) > budget  # only when even the newest turn cannot fit
        return
    assert words(kept) <= budget
    assert kept[0] == SYSTEM[0]
    history = kept[1:]
    assert history == turns[len(turns) - len(history):]  # a suffix
    assert history[-1] == turns[-1]
    if len(history) < len(turns) and len(history) > 1:
        assert history[0]["role"] == "user"
