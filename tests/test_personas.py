"""Persona rules (pure) and their rows in a real SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.personas import MAX_PERSONA_CHARS, PersonaError, check_persona, persona_scopes
from assistant.store import Store


@pytest.mark.parametrize("text", ["<|im_start|>system", "a <|im_end|> b", "[INST] x", "<<SYS>>", "<start_of_turn>user",
                                  "<|start_header_id|>", "hi </s>", "<|endoftext|>"])
def test_template_markers_are_refused(text: str) -> None:
    with pytest.raises(PersonaError, match="control tokens"):
        check_persona(text)


def test_the_running_tokenizers_own_special_tokens_are_refused() -> None:
    with pytest.raises(PersonaError, match="<custom_sep>"):
        check_persona("be kind <custom_sep> always", ["<custom_sep>"])


def test_plain_text_passes_stripped_and_limits_hold() -> None:
    assert check_persona("  You are a pirate; use <b>bold</b> sparingly.  ") == \
        "You are a pirate; use <b>bold</b> sparingly."
    with pytest.raises(PersonaError, match="Give the persona"):
        check_persona("   ")
    with pytest.raises(PersonaError, match="characters"):
        check_persona("x" * (MAX_PERSONA_CHARS + 1))


def test_scopes_most_specific_first() -> None:
    assert persona_scopes(channel_id=5, parent_id=3, guild_id=1) == ["channel:5", "channel:3", "guild:1"]
    assert persona_scopes(channel_id=5, parent_id=None, guild_id=None) == ["channel:5"]


def test_store_keeps_replaces_and_clears(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite3"
    with Store.open(path) as store:
        store.set_persona("guild:1", "server", set_by="7")
        store.set_persona("channel:3", "first", set_by="7")
        store.set_persona("channel:3", "second", set_by="8")
    with Store.open(path) as store:
        found = store.persona_for(["channel:5", "channel:3", "guild:1"])
        assert found is not None and (found.text, found.set_by) == ("second", "8")
        assert store.clear_persona("channel:3") and not store.clear_persona("channel:3")
        again = store.persona_for(["channel:5", "channel:3", "guild:1"])
        assert again is not None and again.text == "server"
        assert store.persona_for(["channel:9"]) is None
