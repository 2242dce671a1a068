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

from assistant.adapters import AdapterManager
from assistant.app import build_runtime
from assistant.discord.abilities import AdapterSwitch, VoiceCalls, VoiceMessages
from assistant.config import Config
from assistant.discord.latency import LatencyLog
from assistant.discord.limits import Limits
from assistant.discord.policy import EditThrottle, RateLimiter, TypingPacer, is_admin
from assistant.errors import NotAllowedError
from assistant.llm.base import ChatBackend
from assistant.memory import TeachingMemory, approved_facts, build_memory
from assistant.personas import Persona, persona_scopes
from assistant.speech.service import SpeechService
from assistant.store import Store
from assistant.voice.latency import VoiceLatencyLog
from finetune.datasets_store import DatasetManager
from finetune.jobs import JobRunner

logger = logging.getLogger(__name__)


@dataclass
class BotServices:
    config: Config
    backend: ChatBackend
    store: Store
    runner: JobRunner
    adapters: AdapterManager
    datasets: DatasetManager
    memory: TeachingMemory = field(init=False)  # approved corrections, recalled into prompts
    # Abilities the cogs register on themselves when they are created (see assistant.discord.abilities).
    calls: VoiceCalls | None = field(default=None, init=False)
    voice_messages: VoiceMessages | None = field(default=None, init=False)
    adapter_switch: AdapterSwitch | None = field(default=None, init=False)
    speech: SpeechService | None = None  # None when the speech models are not provisioned
    session: aiohttp.ClientSession | None = None
    latency: LatencyLog = field(default_factory=LatencyLog)
    voice_latency: VoiceLatencyLog = field(default_factory=VoiceLatencyLog)  # live voice turns (all guilds)
    throttle: EditThrottle = field(init=False)
    limiter: RateLimiter = field(init=False)  # chat answers (= limits.chat)
    limits: Limits = field(init=False)
    typing: TypingPacer = field(default_factory=TypingPacer)

    def __post_init__(self) -> None:
        self.throttle = EditThrottle(self.config.discord.edit_interval_s)
        self.limits = Limits(self.config.security)
        self.limiter = self.limits.chat
        self.memory = build_memory(self.config.memory, self.config.storage.models_dir,
                                   lambda: approved_facts(self.store))

    def is_admin(self, user_id: int, role_ids: list[int]) -> bool:
        sec = self.config.security
        return is_admin(user_id, role_ids, admin_user_ids=sec.admin_user_ids, admin_role_ids=sec.admin_role_ids)

    def require_admin(self, user_id: int, role_ids: list[int], what: str) -> None:
        if not self.is_admin(user_id, role_ids):
            raise NotAllowedError(f"Only the bot's admins can {what}; ask one of them "
                                  "(admins are listed in security.admin_user_ids / admin_role_ids).")

    def persona_scopes(self, channel: Any) -> list[str]:
        """Persona scopes for a channel, thread or voice channel (threads inherit from their parent)."""
        guild = getattr(channel, "guild", None)
        return persona_scopes(channel_id=getattr(channel, "id", None), parent_id=getattr(channel, "parent_id", None),
                              guild_id=guild.id if guild is not None else None)

    async def persona_for(self, channel: Any) -> Persona | None:
        return await asyncio.to_thread(self.store.persona_for, self.persona_scopes(channel))

    async def system_prompt_for(self, channel: Any) -> str:
        """The system prompt answers in `channel` use: its persona, else `model.system_prompt`."""
        persona = await self.persona_for(channel)
        return persona.text if persona is not None else self.config.model.system_prompt

    def http(self) -> aiohttp.ClientSession:
        if self.session is None or self.session.closed:
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
        return self.session

    async def aclose(self) -> None:
        if self.session is not None:
            await self.session.close()
        await self.backend.aclose()
        self.store.close()


async def build_services(config: Config, *, backend: ChatBackend | None = None) -> BotServices:
    """The core runtime (`assistant.app`) plus what only the bot needs: the job runner and datasets."""
    runtime = await build_runtime(config, backend=backend)
    runner = await asyncio.to_thread(functools.partial(JobRunner, config, runtime.store, beside_engine=True))
    tokenizer = getattr(runtime.backend, "tokenizer", None)
    datasets = DatasetManager(config.storage.datasets_dir, runtime.store, tokenizer=tokenizer,
                              max_seq_len=config.finetune.max_seq_len, system_prompt=config.model.system_prompt)
    return BotServices(config=config, backend=runtime.backend, store=runtime.store, runner=runner,
                       adapters=runtime.adapters, datasets=datasets, speech=runtime.speech)
