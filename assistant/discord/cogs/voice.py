"""Voice channels: `join`, `leave`, live listening, and speaking text answers in the call.

`join` connects with our `ListeningVoiceClient`; with `voice.listen` on (and speech set up)
it starts one `VoiceSession` per guild (hear → recognise → answer by voice, see
`assistant.discord.voice_session`) and says so in the text channel: people must know they
are heard. `leave` stops listening before disconnecting, so no audio is read after it.

When the bot is in the author's voice channel, the chat cog also feeds a text answer's
deltas to a `Speaker`, which speaks them sentence by sentence (`assistant.voice.playback`).
A live voice answer has priority: a typed answer waits until the call's spoken answer is over
(it is synthesised meanwhile) instead of cutting it off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, AsyncIterator

import nextcord
from nextcord.ext import commands

from assistant.config import VoiceConfig
from assistant.discord.invocation import Invocation
from assistant.discord.playback import DiscordSink
from assistant.discord.services import BotServices
from assistant.discord.voice_session import VoiceSession
from assistant.errors import AssistantError
from assistant.voice.playback import FrameQueue, speak_deltas

logger = logging.getLogger(__name__)


def _voice_client(guild: nextcord.Guild | None) -> nextcord.VoiceClient | None:
    """The guild's voice client; ours are always `nextcord.VoiceClient`s (nextcord types it as the base protocol)."""
    vc = guild.voice_client if guild is not None else None
    return vc if isinstance(vc, nextcord.VoiceClient) else None


def _quoted(words: list[str]) -> str:
    quoted = [f"“{w}”" for w in words]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + f" or {quoted[-1]}"


def listening_notice(channel: str, voice: VoiceConfig, joiner: str) -> str:
    """The one sentence that tells people in the call whom the bot answers, and how to be heard.

    Why it names the mode and the wake word: in the default follow-up mode a newcomer who
    asks a question without the wake word otherwise gets silence and no idea why."""
    wake = _quoted(voice.wake_words) if voice.wake_words else "my name"
    if voice.answer_mode == "everyone":
        whom = "I answer everything said there"
    elif voice.answer_mode == "wake_word":
        whom = f"I answer when you say {wake}"
    else:
        whom = (f"{joiner}, talk to me now; anyone else, say {wake} first, "
                f"then follow up without it for {voice.follow_up_s:g} s")
    return f"🎙️ Listening in {channel}: {whom} (audio stays in memory; `leave` stops me)."


class Speaker:
    """Speaks one streamed answer in a voice call (see module docstring)."""

    def __init__(self, vc: Any, speech: Any, wait_turn: Callable[[], Awaitable[None]] | None = None) -> None:
        self.vc = vc
        self.speech = speech
        self._wait_turn = wait_turn
        self._deltas: asyncio.Queue[str | None] = asyncio.Queue()
        self.source = FrameQueue()
        self._task = asyncio.create_task(self._run())

    def feed(self, delta: str) -> None:
        self._deltas.put_nowait(delta)

    async def _text(self) -> AsyncIterator[str]:
        while (delta := await self._deltas.get()) is not None:
            yield delta

    async def _run(self) -> None:
        await speak_deltas(DiscordSink(self.vc), self.speech, self._text(), self.source, before_play=self._wait_turn)

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
        self.sessions: dict[int, VoiceSession] = {}  # guild id → listening session
        services.calls = self

    def speaker_for(self, message: nextcord.Message) -> Speaker | None:
        """A Speaker when the bot is in the author's voice channel and may speak there."""
        if not self.services.config.discord.speak_in_voice_channel or self.services.speech is None:
            return None
        guild = message.guild
        vc = _voice_client(guild)
        author_voice = getattr(message.author, "voice", None)
        if vc is None or not vc.is_connected() or author_voice is None or author_voice.channel is None:
            return None
        if author_voice.channel.id != getattr(vc.channel, "id", None):
            return None
        session = self.sessions.get(guild.id) if guild is not None else None
        return Speaker(vc, self.services.speech, session.until_quiet if session is not None else None)

    async def join(self, inv: Invocation) -> None:
        voice = getattr(inv.user, "voice", None)
        if inv.guild is None or voice is None or voice.channel is None:
            raise AssistantError("Join a voice channel first, then ask me to join.")
        current = _voice_client(inv.guild)
        if current is not None and current.is_connected():
            if getattr(current.channel, "id", None) == voice.channel.id:
                await inv.send(f"I'm already in {voice.channel.name}.")
                return
            self.stop_listening(inv.guild.id)  # one conversation per voice channel: start afresh there
            await current.move_to(voice.channel)
        else:
            from assistant.discord.voice_recv import ListeningVoiceClient

            await voice.channel.connect(cls=ListeningVoiceClient)
        vc = inv.guild.voice_client
        note = "" if self.services.speech is not None else " (speech is not set up, so I can't talk yet)"
        await inv.send(f"Joined {voice.channel.name}; I'll speak my answers to you there{note}. "
                       "`leave` makes me go.")
        if self.services.config.voice.listen and self.services.speech is not None and inv.guild.id not in self.sessions:
            try:
                session = self.start_listening(inv.guild, vc,
                                               system_prompt=await self.services.system_prompt_for(voice.channel))
            except AssistantError as exc:  # e.g. the turn model is not provisioned: say so, stay joined
                await inv.send(f"I can't listen in {voice.channel.name}: {exc}")
                return
            session.address(inv.user.id)  # whoever typed `join` is talking to us from now on
            name = getattr(inv.user, "display_name", None) or "you"
            await inv.send(listening_notice(voice.channel.name, self.services.config.voice, name))

    def start_listening(self, guild: nextcord.Guild, vc: Any, *, system_prompt: str) -> VoiceSession:
        def name_of(user_id: int) -> str:
            member = guild.get_member(user_id)
            if member is not None:
                return member.display_name
            user = self.bot.get_user(user_id)
            return user.display_name if user is not None else f"user {user_id}"

        services = self.services
        session = VoiceSession(vc, config=services.config, backend=services.backend, speech=services.speech,
                               store=services.store, latency=services.voice_latency, name_of=name_of,
                               system_prompt=system_prompt, limiter=services.limits.voice,
                               notes=services.memory.notes)
        session.start()
        self.sessions[guild.id] = session
        return session

    async def refresh_persona(self, guild_id: int) -> None:
        """A persona set or cleared during a call applies from its next answer, not from the next `join`."""
        session = self.sessions.get(guild_id)
        if session is not None:
            session.conversation.system_prompt = await self.services.system_prompt_for(session.vc.channel)

    def stop_listening(self, guild_id: int) -> None:
        session = self.sessions.pop(guild_id, None)
        if session is not None:
            session.stop()

    async def leave(self, inv: Invocation) -> None:
        vc = inv.guild.voice_client if inv.guild is not None else None
        if inv.guild is not None:
            self.stop_listening(inv.guild.id)
        if vc is None:
            raise AssistantError("I'm not in a voice channel.")
        await vc.disconnect(force=True)
        await inv.send("Left the voice channel.")

    @commands.Cog.listener()
    async def on_voice_state_update(self, member: nextcord.Member, before: Any, after: Any) -> None:
        """Kicked or disconnected from the call: stop listening there too."""
        me = self.bot.user
        if me is not None and member.id == me.id and after.channel is None:
            self.stop_listening(member.guild.id)

    async def disconnect_all(self) -> None:
        for guild_id in list(self.sessions):
            self.stop_listening(guild_id)
        for vc in list(self.bot.voice_clients):
            try:
                await vc.disconnect(force=True)
            except Exception:  # noqa: BLE001 - shutting down anyway
                logger.debug("voice disconnect failed", exc_info=True)

    @commands.command(name="join", help="Join your voice channel: listen and speak answers there.")
    async def join_prefix(self, ctx: commands.Context) -> None:
        await self.join(Invocation.from_context(ctx))

    @nextcord.slash_command(name="join", description="Join your voice channel: listen and speak answers there.")
    async def join_slash(self, interaction: nextcord.Interaction) -> None:
        await self.join(await Invocation.from_interaction(interaction))

    @commands.command(name="leave", help="Leave the voice channel.")
    async def leave_prefix(self, ctx: commands.Context) -> None:
        await self.leave(Invocation.from_context(ctx))

    @nextcord.slash_command(name="leave", description="Leave the voice channel.")
    async def leave_slash(self, interaction: nextcord.Interaction) -> None:
        await self.leave(await Invocation.from_interaction(interaction))


COGS = (Voice,)
