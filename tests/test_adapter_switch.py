"""Activation keeps the pointer file and the engine in step even when a step fails."""

from __future__ import annotations

import json
from pathlib import Path
from typing import AsyncIterator

import pytest

from assistant.adapters import AdapterManager, AdapterRegistry
from assistant.errors import AdapterError
from assistant.llm.base import ChatBackend, GenerationOptions, Message


class SwitchFails(ChatBackend):
    """An engine that loads adapters but cannot switch to them (e.g. it is shutting down)."""

    def __init__(self) -> None:
        self.loaded: dict[str, str] = {}
        self.active: str | None = None

    def stream(self, messages: list[Message], options: GenerationOptions | None = None) -> AsyncIterator[str]:
        raise NotImplementedError

    def count_tokens(self, messages: list[Message]) -> int:
        return 0

    def adapters(self) -> list[str]:
        return sorted(self.loaded)

    async def load_adapter(self, name: str, path: str) -> None:
        self.loaded[name] = path

    def set_active_adapter(self, name: str | None) -> None:
        if name is not None:
            raise AdapterError("The engine refused to switch.")
        self.active = None


def make_adapter(runs: Path, name: str) -> None:
    folder = runs / name / "adapter"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    (folder / "finetune.json").write_text(json.dumps({"base_model": {"name": "base-model"}}))


async def test_a_failed_switch_puts_the_pointer_back(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    make_adapter(runs, "good")
    manager = AdapterManager(runs, SwitchFails(), "base-model")
    before = (runs / "active.json").read_text() if (runs / "active.json").exists() else None
    with pytest.raises(AdapterError, match="refused to switch"):
        await manager.activate("good")
    assert AdapterRegistry(runs).active() is None  # a restart would not use it either
    after = (runs / "active.json").read_text() if (runs / "active.json").exists() else None
    assert after is None or json.loads(after)["active"] is None
    assert before is None


async def test_activation_saves_the_pointer_before_the_engine_switches(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    make_adapter(runs, "good")
    seen: list[str | None] = []

    class Records(SwitchFails):
        def set_active_adapter(self, name: str | None) -> None:
            seen.append(AdapterRegistry(runs).active())
            self.active = name

    manager = AdapterManager(runs, Records(), "base-model")
    assert await manager.activate("good") == "good"
    assert seen == ["good"] and not list(runs.glob(".active.json.*"))
