"""Everything the bot's cogs use, built once from config and handed in (no globals).

Tests build the same object with their own config (a temporary database, small limits)
and hand it to `create_bot`; `run_bot` builds it from the user's config.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from assistant.config import Config
from assistant.discord.latency import LatencyLog
from assistant.discord.policy import EditThrottle, RateLimiter, TypingPacer, is_admin
from assistant.errors import AdapterError, NotAllowedError
from assistant.llm.base import ChatBackend
from assistant.memory import TeachingMemory, approved_facts
from assistant.store import Store
from assistant.voice.latency import VoiceLatencyLog

logger = logging.getLogger(__name__)


class AdapterManager:
    """The adapter registry (which adapter is active, on disk) kept in step with the engine.

    Activation loads the adapter into the running engine (no model reload) before the
    pointer file changes, so a broken adapter never becomes "active".
    """

    def __init__(self, config: Config, backend: ChatBackend, base_source: str) -> None:
        from finetune.adapters import AdapterRegistry

        self.registry = AdapterRegistry(config.storage.runs_dir)
        self.backend = backend
        self.base_source = base_source

    def names(self) -> list[str]:
        return [info.name for info in self.registry.list()]

    @property
    def active(self) -> str | None:
        return self.registry.active()

    async def _load(self, name: str | None) -> None:
        if name is None:
            self.backend.set_active_adapter(None)
            return
        from finetune.adapters import check_adapter_compatible

        path = self.registry.path(name)
        await asyncio.to_thread(check_adapter_compatible, path, self.base_source)
        if name not in self.backend.adapters():
            await self.backend.load_adapter(name, str(path))
        self.backend.set_active_adapter(name)

    async def activate(self, name: str | None, *, force: bool = False) -> str | None:
        if name is not None:
            from finetune.gate import check_gate

            await asyncio.to_thread(check_gate, self.registry.path(name).parent, force=force)
        await self._load(name)
        return await asyncio.to_thread(self.registry.activate, name, base_source=self.base_source, force=force)

    async def load(self, name: str) -> None:
        """Load an adapter into the engine without activating it (the evaluation gate asks it questions)."""
        from finetune.adapters import check_adapter_compatible

        path = self.registry.path(name)
        await asyncio.to_thread(check_adapter_compatible, path, self.base_source)
        if name not in self.backend.adapters():
            await self.backend.load_adapter(name, str(path))

    async def rollback(self) -> str | None:
        name = await asyncio.to_thread(self.registry.rollback)
        await self._load(name)
        return name

    async def load_active(self) -> None:
        """At start: make the engine use the adapter the registry says is active."""
        name = self.registry.active()
        if name is not None:
            try:
                await self._load(name)
                logger.info("Using adapter %s", name)
            except AdapterError as exc:
                logger.warning("Not using the active adapter: %s", exc)


@dataclass
class BotServices:
    config: Config
    backend: ChatBackend
    store: Store
    runner: Any  # finetune.jobs.JobRunner
    adapters: AdapterManager
    datasets: Any  # finetune.datasets_store.DatasetManager
    memory: TeachingMemory = field(init=False)  # approved corrections, recalled into prompts
    speech: Any = None  # assistant.speech SpeechService, when speech is available
    session: aiohttp.ClientSession | None = None
    latency: LatencyLog = field(default_factory=LatencyLog)
    voice_latency: VoiceLatencyLog = field(default_factory=VoiceLatencyLog)  # live voice turns (all guilds)
    throttle: EditThrottle = field(init=False)
    limiter: RateLimiter = field(init=False)
    typing: TypingPacer = field(default_factory=TypingPacer)

    def __post_init__(self) -> None:
        self.throttle = EditThrottle(self.config.discord.edit_interval_s)
        self.limiter = RateLimiter(self.config.security.rate_limit_messages, self.config.security.rate_limit_window_s)
        self.memory = TeachingMemory(self.config.memory, lambda: approved_facts(self.store))

    def is_admin(self, user_id: int, role_ids: list[int]) -> bool:
        sec = self.config.security
        return is_admin(user_id, role_ids, admin_user_ids=sec.admin_user_ids, admin_role_ids=sec.admin_role_ids)

    def require_admin(self, user_id: int, role_ids: list[int], what: str) -> None:
        if not self.is_admin(user_id, role_ids):
            raise NotAllowedError(f"Only the bot's admins can {what}; ask one of them "
                                  "(admins are listed in security.admin_user_ids / admin_role_ids).")

    def http(self) -> aiohttp.ClientSession:
        if self.session is None or self.session.closed:
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
        return self.session

    async def aclose(self) -> None:
        if self.session is not None:
            await self.session.close()
        await self.backend.aclose()
        self.store.close()


def _speech(config: Config) -> Any:
    """The speech service when the speech layer is installed and its models are provisioned."""
    try:
        from assistant.speech.service import SpeechService
    except ImportError:
        logger.info("Speech layer not available: voice messages and spoken answers are off.")
        return None
    try:
        return SpeechService(config.speech, config.storage)
    except Exception as exc:  # noqa: BLE001 - the bot still chats in text without speech
        logger.warning("Speech is off: %s", exc)
        return None


async def build_services(config: Config, *, backend: ChatBackend | None = None) -> BotServices:
    """Load the model (unless given), open the store and the finetune helpers."""
    from assistant.cli.chat import open_backend
    from assistant.llm.catalog import resolve_model_source
    from finetune.datasets_store import DatasetManager
    from finetune.jobs import JobRunner

    if backend is None:
        backend = await open_backend(config, use_active=False)  # AdapterManager loads it
    store = Store.open(config.storage.database)
    runner = await asyncio.to_thread(functools.partial(JobRunner, config, store, beside_engine=True))
    base_source = resolve_model_source(config.model.name, config.storage.models_dir)
    adapters = AdapterManager(config, backend, base_source)
    if not config.model.adapter:
        await adapters.load_active()
    tokenizer = getattr(backend, "tokenizer", None)
    datasets = DatasetManager(config.storage.datasets_dir, store, tokenizer=tokenizer,
                              max_seq_len=config.finetune.max_seq_len, system_prompt=config.model.system_prompt)
    return BotServices(config=config, backend=backend, store=store, runner=runner, adapters=adapters,
                       datasets=datasets, speech=await asyncio.to_thread(_speech, config))
