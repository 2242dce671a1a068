"""Harness for end-to-end bot tests: the real model, a real nextcord bot, the local fake Discord.

One model per test session (the engine is loop-independent), one server + bot per test
module where the tests allow it. Config is built after the server starts, because the
admin ids come from the server's world.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from assistant.config import Config, parse_config
from assistant.llm import create_backend
from assistant.llm.base import ChatBackend
from tests.fakediscord import FakeDiscord

SMALL_REPLY_TOKENS = 24
REPO = Path(__file__).resolve().parents[2]


# The bot tests run the smallest model (the default would make every answer and the training test
# minutes slower) on the transformers engine in bf16, which their expected answers were written
# against: its Q4_1 GGUF through llama.cpp answers some of their questions differently ("France's
# largest country in Europe" for the capital of France, spoken). test_llamacpp_e2e.py runs the
# bot on llama.cpp, which is what `backend = "auto"` picks on a CPU.
TEST_MODEL = "smollm2-135m-instruct"
TEST_BACKEND = "transformers"


@pytest.fixture(scope="session")
def backend(repo_config: Config) -> ChatBackend:
    import dataclasses

    engine = create_backend(dataclasses.replace(repo_config.model, name=TEST_MODEL, backend=TEST_BACKEND),
                            repo_config.storage.models_dir)
    yield engine
    engine.close()  # type: ignore[attr-defined]


def bot_config(root: Path, repo_config: Config, server: FakeDiscord, **sections: dict[str, Any]) -> Config:
    """A config like a user's, with storage under `root`, alice as admin, small replies."""
    raw: dict[str, dict[str, Any]] = {
        "model": {"name": TEST_MODEL, "backend": TEST_BACKEND, "max_new_tokens": SMALL_REPLY_TOKENS,
                  "max_batch_size": 8},
        "discord": {"api_base": server.api_base, "history_messages": 6},
        "security": {"admin_user_ids": [server.alice.id], "rate_limit_messages": 50, "command_rate_limit": 500},
        "storage": {"models_dir": str(repo_config.storage.models_dir),
                    "voices_dir": str(repo_config.storage.voices_dir), "datasets_dir": "datasets",
                    "runs_dir": "runs", "exports_dir": "exports", "database": "data/assistant.sqlite3",
                    "control_set": str(REPO / "datasets" / "control.jsonl"),
                    "replay_prompts": str(REPO / "datasets" / "replay_prompts.txt")},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    root.mkdir(parents=True, exist_ok=True)
    source = root / "config.toml"
    source.write_text(_toml(raw), encoding="utf-8")
    return parse_config(raw, source=source, environ={})


def _toml(raw: dict[str, dict[str, Any]]) -> str:
    import json

    lines = []
    for section, values in raw.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


@contextlib.asynccontextmanager
async def running_bot(server: FakeDiscord, config: Config, backend: ChatBackend) -> AsyncIterator[Any]:
    """Services over the shared model, the bot connected to `server`, closed at the end."""
    from assistant.discord.bot import create_bot
    from assistant.discord.services import build_services

    services = await build_services(config, backend=_Borrowed(backend))
    bot = create_bot(services, guild_ready_timeout=0.05)
    try:
        async with server.run_client(bot, ready_timeout=30.0):
            yield bot
    finally:
        await services.aclose()


class _Borrowed(ChatBackend):
    """The session's engine, lent to one bot: closing the bot must not stop the engine."""

    def __init__(self, inner: ChatBackend) -> None:
        self.inner = inner
        self.tokenizer = getattr(inner, "tokenizer", None)

    def stream(self, messages, options=None):  # type: ignore[no-untyped-def]
        return self.inner.stream(messages, options)

    def count_tokens(self, messages):  # type: ignore[no-untyped-def]
        return self.inner.count_tokens(messages)

    @property
    def active_adapter(self) -> str | None:
        return self.inner.active_adapter

    def adapters(self) -> list[str]:
        return self.inner.adapters()

    async def load_adapter(self, name: str, path: str) -> None:
        await self.inner.load_adapter(name, path)

    def set_active_adapter(self, name: str | None) -> None:
        self.inner.set_active_adapter(name)

    async def end_of_turn_probability(self, text: str, *, system_prompt: str = "",
                                      answer_follows: bool = False) -> float | None:
        return await self.inner.end_of_turn_probability(text, system_prompt=system_prompt,
                                                        answer_follows=answer_follows)

    async def aclose(self) -> None:
        self.inner.set_active_adapter(None)
