"""Voice channels, playback side: `join`, `leave`, and speaking answers sentence by sentence.

When the bot is in the author's voice channel, the chat cog feeds the answer's text deltas
to a `Speaker`: sentences are split and synthesised (Piper, in threads) while the text is
still being generated, and the 48 kHz stereo frames go to ONE continuous audio source, so
sentences follow each other without gaps in the RTP stream. Nothing is played before the
call's DAVE key exists: frames sent earlier would go out unencrypted and be dropped.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import time
from typing import Any, AsyncIterator

import nextcord
from nextcord.ext import commands

from assistant.discord.invocation import Invocation
from assistant.discord.services import BotServices
from assistant.errors import AssistantError

logger = logging.getLogger(__name__)

SILENCE = b"\0" * 3840  # one 20 ms frame of 48 kHz stereo s16
DAVE_WAIT_S = 5.0


class FrameQueueSource(nextcord.AudioSource):
    """PCM frames pushed from the event loop, read by nextcord's player thread every 20 ms.

    While the next sentence is being synthesised it plays silence; after `close()` and
    the last frame it returns b"" and playback ends.
    """

    def __init__(self) -> None:
        self._frames: queue.Queue[bytes] = queue.Queue()
        self._closed = False
        self.first_frame_at: float | None = None

    def push(self, frames: list[bytes]) -> None:
        for frame in frames:
            self._frames.put(frame)

    def close(self) -> None:
        self._closed = True

    def read(self) -> bytes:
        try:
            frame = self._frames.get_nowait()
        except queue.Empty:
            return b"" if self._closed else SILENCE
        if self.first_frame_at is None:
            self.first_frame_at = time.monotonic()
        return frame

    def is_opus(self) -> bool:
        return False


async def wait_for_dave(vc: Any, timeout: float = DAVE_WAIT_S) -> bool:
    """True once the call can encrypt (or has no DAVE)."""
    waiter = getattr(vc, "wait_until_can_encrypt", None)
    if waiter is not None:
        return bool(await waiter(timeout))
    state = getattr(vc, "e2ee_state", None)
    deadline = time.monotonic() + timeout
    while state is not None and not state.can_encrypt():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


class Speaker:
    """Speaks one streamed answer in a voice call (see module docstring)."""

    def __init__(self, vc: Any, speech: Any) -> None:
        self.vc = vc
        self.speech = speech
        self._deltas: asyncio.Queue[str | None] = asyncio.Queue()
        self.source = FrameQueueSource()
        self._task = asyncio.create_task(self._run())

    def feed(self, delta: str) -> None:
        self._deltas.put_nowait(delta)

    async def _text(self) -> AsyncIterator[str]:
        while (delta := await self._deltas.get()) is not None:
            yield delta

    async def _run(self) -> None:
        from assistant.audio import discord_frames

        if not await wait_for_dave(self.vc):
            logger.warning("Voice encryption key never arrived; not speaking this answer.")
            return
        started = False
        async for audio in self.speech.speak_stream(self._text()):
            frames = await asyncio.to_thread(lambda a=audio: list(discord_frames(a.samples, a.rate)))
            self.source.push(frames)
            if not started and self.vc.is_connected():
                if self.vc.is_playing():
                    self.vc.stop()  # a newer answer replaces the one being spoken
                self.vc.play(self.source, after=lambda err: err and logger.warning("Playback error: %s", err))
                started = True

    async def finish(self) -> float | None:
        """Wait until every sentence is synthesised and queued; returns when the first frame played."""
        self._deltas.put_nowait(None)
        try:
            await self._task
        except Exception:  # noqa: BLE001 - speaking is a bonus; the text answer stands
            logger.exception("Could not speak the answer")
        finally:
            self.source.close()
        for _ in range(100):  # the player thread reads the first frame within ~20 ms of play()
            if self.source.first_frame_at is not None or not self.vc.is_playing():
                break
            await asyncio.sleep(0.02)
        return self.source.first_frame_at


class Voice(commands.Cog):
    def __init__(self, bot: commands.Bot, services: BotServices) -> None:
        self.bot = bot
        self.services = services

    def speaker_for(self, message: nextcord.Message) -> Speaker | None:
        """A Speaker when the bot is in the author's voice channel and may speak there."""
        if not self.services.config.discord.speak_in_voice_channel or self.services.speech is None:
            return None
        guild = message.guild
        vc = guild.voice_client if guild is not None else None
        author_voice = getattr(message.author, "voice", None)
        if vc is None or not vc.is_connected() or author_voice is None or author_voice.channel is None:
            return None
        if author_voice.channel.id != vc.channel.id:
            return None
        return Speaker(vc, self.services.speech)

    async def join(self, inv: Invocation) -> None:
        voice = getattr(inv.user, "voice", None)
        if inv.guild is None or voice is None or voice.channel is None:
            raise AssistantError("Join a voice channel first, then ask me to join.")
        current = inv.guild.voice_client
        if current is not None and current.is_connected():
            if current.channel.id == voice.channel.id:
                await inv.send(f"I'm already in {voice.channel.name}.")
                return
            await current.move_to(voice.channel)
        else:
            from assistant.discord.voice_recv import ListeningVoiceClient

            await voice.channel.connect(cls=ListeningVoiceClient)
        note = "" if self.services.speech is not None else " (speech is not set up, so I can't talk yet)"
        await inv.send(f"Joined {voice.channel.name}; I'll speak my answers to you there{note}. "
                       "`leave` makes me go.")

    async def leave(self, inv: Invocation) -> None:
        vc = inv.guild.voice_client if inv.guild is not None else None
        if vc is None:
            raise AssistantError("I'm not in a voice channel.")
        await vc.disconnect(force=True)
        await inv.send("Left the voice channel.")

    async def disconnect_all(self) -> None:
        for vc in list(self.bot.voice_clients):
            try:
                await vc.disconnect(force=True)
            except Exception:  # noqa: BLE001 - shutting down anyway
                logger.debug("voice disconnect failed", exc_info=True)

    @commands.command(name="join", help="Join your voice channel and speak answers there.")
    async def join_prefix(self, ctx: commands.Context) -> None:
        await self.join(Invocation.from_context(ctx))

    @nextcord.slash_command(name="join", description="Join your voice channel and speak answers there.")
    async def join_slash(self, interaction: nextcord.Interaction) -> None:
        await self.join(await Invocation.from_interaction(interaction))

    @commands.command(name="leave", help="Leave the voice channel.")
    async def leave_prefix(self, ctx: commands.Context) -> None:
        await self.leave(Invocation.from_context(ctx))

    @nextcord.slash_command(name="leave", description="Leave the voice channel.")
    async def leave_slash(self, interaction: nextcord.Interaction) -> None:
        await self.leave(await Invocation.from_interaction(interaction))


COGS = (Voice,)
