"""One guild's live voice conversation on Discord: glue between nextcord and the core's `VoiceCall`.

    VoiceListener (UDP → SpeechEvents) → VoiceCall (assistant.voice.call: recognise, answer,
    speak) → DiscordSink (FrameQueue → nextcord's player)

Discord supplies the audio in (our listening voice client), the audio out (the sink), the
speakers' display names and the channel id; everything the assistant does with them lives
in the core.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from assistant.config import Config
from assistant.conversation import Conversation
from assistant.discord.playback import DiscordSink
from assistant.llm.base import ChatBackend
from assistant.voice.call import Limiter, VoiceCall
from assistant.voice.dialog import VoiceDialog
from assistant.voice.latency import VoiceLatencyLog
from assistant.voice.silero import silero_model_path

logger = logging.getLogger(__name__)


def voice_conversation_key(channel_id: int) -> str:
    """The store's conversation key for what is said in a voice channel."""
    return f"discord-voice:{channel_id}"


def debug_audio_dir(config: Config) -> Path:
    """Where `voice.debug_record_audio` writes utterances: next to the database."""
    return Path(config.storage.database).parent / "voice-debug"


class VoiceSession:
    """Listening and answering in one voice call; `start()` once, `stop()` ends it at once."""

    def __init__(self, vc: Any, *, config: Config, backend: ChatBackend, speech: Any, store: Any = None,
                 latency: VoiceLatencyLog | None = None, name_of: Callable[[int], str] | None = None,
                 system_prompt: str | None = None, limiter: Limiter | None = None,
                 notes: Callable[[str], list[str]] | None = None) -> None:
        from assistant.discord.voice_recv import VoiceListener

        self.vc = vc
        channel_id = int(vc.channel.id)
        self.sink = DiscordSink(vc)
        self.call = VoiceCall(
            self.sink, channel_id=channel_id, model=config.model, voice=config.voice,
            models_dir=config.storage.models_dir, backend=backend, speech=speech, store=store,
            conversation_key=voice_conversation_key(channel_id), latency=latency, name_of=name_of,
            system_prompt=system_prompt, limiter=limiter, notes=notes, end_turn=self._end_turn,
            debug_dir=debug_audio_dir(config) if config.voice.debug_record_audio else None)
        self.listener = VoiceListener(vc, self.call.on_event, config.voice,
                                      vad_model=silero_model_path(config.storage.models_dir))
        self.active = False

    # What tests, benchmarks and the cog read of the call.
    @property
    def dialog(self) -> VoiceDialog:
        return self.call.dialog

    @property
    def transcripts(self) -> list[tuple[int, str]]:
        return self.call.transcripts

    @property
    def conversation(self) -> Conversation:
        return self.call.conversation

    @property
    def latency(self) -> VoiceLatencyLog:
        return self.call.latency

    def start(self) -> None:
        self.listener.start()
        self.active = True

    def address(self, user_id: int) -> None:
        """`user_id` addressed the bot outside the call (typed `join`): open their follow-up window now."""
        self.call.address(user_id)

    def stop(self) -> None:
        """Stop hearing at once (buffered audio dropped), cut playback, cancel pending turns."""
        if not self.active:
            return
        self.active = False
        self.listener.stop()
        self.call.close()

    async def until_quiet(self, timeout: float = 120.0) -> None:
        await self.call.until_quiet(timeout)

    def _end_turn(self, user_id: int, speech_end: float) -> None:
        if self.active:
            self.listener.receiver.end_now(user_id, speech_end, time.monotonic())
