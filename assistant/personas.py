"""Personas: the system prompt of one channel or one server, set by its admins, kept in the store.

Why per place: one server's study channel wants a patient tutor, its game channel a terse
referee; llmcord's most requested change is exactly this. Resolution is most specific
first — the channel, then the parent channel of a thread (threads inherit), then the server
— and `model.system_prompt` from config.toml when none is set. A persona is user text that
becomes a system turn, so it must never carry chat-template control tokens (`<|im_start|>` …):
those are refused when it is set, with a message that says why.

A different persona is simply a different prompt prefix: the engine's prefix cache matches
by tokens, so a change starts a new cached prefix and never reuses the old one.
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from assistant.errors import AssistantError, StoreError

MAX_PERSONA_CHARS = 2000  # about 500 tokens: room for a character, not a second conversation
# Markers of the chat templates our models use (ChatML, Llama 2/3, Gemma, Mistral), refused even
# when the running tokenizer does not know them: a persona must survive a change of model.
TEMPLATE_MARKERS = re.compile(r"<\|[a-z_]+\|>|<\|(?:start|end)_header_id\|>|\[/?INST\]|<</?SYS>>|"
                              r"<(?:start|end)_of_turn>|</?s>", re.IGNORECASE)


class PersonaError(AssistantError):
    """A persona that cannot be set (too long, empty, or carrying control tokens)."""


@dataclass(frozen=True)
class Persona:
    scope: str  # "channel:<id>" or "guild:<id>"
    text: str
    set_by: str
    set_at: float


def channel_scope(channel_id: int | str) -> str:
    return f"channel:{channel_id}"


def guild_scope(guild_id: int | str) -> str:
    return f"guild:{guild_id}"


def check_persona(text: str, special_tokens: Iterable[str] = ()) -> str:
    """The persona text, stripped, or PersonaError saying what to change."""
    text = text.strip()
    if not text:
        raise PersonaError("Give the persona's text, e.g. `persona set You are a patient maths tutor.`")
    if len(text) > MAX_PERSONA_CHARS:
        raise PersonaError(f"That persona is {len(text)} characters; keep it under {MAX_PERSONA_CHARS}.")
    found = {m.group(0) for m in TEMPLATE_MARKERS.finditer(text)}
    found |= {t for t in special_tokens if len(t) > 2 and t in text}
    if found:
        raise PersonaError("A persona cannot contain the model's control tokens "
                           f"({', '.join(sorted(found))}): they would end the system turn early. Remove them.")
    return text


def personas_migration(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE personas (scope TEXT PRIMARY KEY, text TEXT NOT NULL, set_by TEXT NOT NULL, "
               "set_at REAL NOT NULL)")


class PersonaQueries:
    """Persona rows of the store (mixed into `Store`, which provides the connection and lock)."""

    def _write(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        raise NotImplementedError

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        raise NotImplementedError

    def set_persona(self, scope: str, text: str, *, set_by: str) -> Persona:
        now = time.time()
        self._write("INSERT INTO personas(scope, text, set_by, set_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(scope) DO UPDATE SET text = excluded.text, set_by = excluded.set_by, "
                    "set_at = excluded.set_at", (scope, text, set_by, now))
        return Persona(scope, text, set_by, now)

    def clear_persona(self, scope: str) -> bool:
        existed = bool(self._rows("SELECT 1 FROM personas WHERE scope = ?", (scope,)))
        self._write("DELETE FROM personas WHERE scope = ?", (scope,))
        return existed

    def personas(self, scopes: Sequence[str]) -> dict[str, Persona]:
        if not scopes:
            return {}
        marks = ",".join("?" * len(scopes))
        try:
            rows = self._rows(f"SELECT scope, text, set_by, set_at FROM personas WHERE scope IN ({marks})",
                              tuple(scopes))
        except sqlite3.Error as exc:
            raise StoreError(f"Could not read personas ({exc}).") from None
        return {r["scope"]: Persona(r["scope"], r["text"], r["set_by"], r["set_at"]) for r in rows}

    def persona_for(self, scopes: Sequence[str]) -> Persona | None:
        """The most specific persona among `scopes` (ordered most specific first), or None."""
        found = self.personas(scopes)
        return next((found[s] for s in scopes if s in found), None)


def persona_scopes(*, channel_id: int | None, parent_id: int | None, guild_id: int | None) -> list[str]:
    """Where a persona may come from, most specific first: the channel, a thread's parent, the server."""
    scopes = [channel_scope(i) for i in (channel_id, parent_id) if i is not None]
    if guild_id is not None:
        scopes.append(guild_scope(guild_id))
    return list(dict.fromkeys(scopes))


def describe_scope(scope: str) -> str:
    kind, _, ident = scope.partition(":")
    return "this server" if kind == "guild" else f"<#{ident}>"
