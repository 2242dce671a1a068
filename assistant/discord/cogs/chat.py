"""Chat: decide whether a message is for the bot, gather its context, stream the answer, store the turn."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

import nextcord
from nextcord.ext import commands

from assistant.discord import replies
from assistant.discord.attachments import is_audio
from assistant.discord.history import Said, build_prompt, to_turns
from assistant.discord.latency import TurnTiming
from assistant.discord.limits import over_limit, slow_down
from assistant.discord.policy import Incoming, correction_text, should_answer, strip_mentions
from assistant.discord.services import BotServices
from assistant.errors import AssistantError
from assistant.llm import default_options
from assistant.llm.base import Message

logger = logging.getLogger(__name__)

def conversation_key(channel: Any) -> str:
    return f"discord:{channel.id}"


class Chat(commands.Cog):
    def __init__(self, bot: commands.Bot, services: BotServices) -> None:
        self.bot = bot
        self.services = services

    def _replied_message(self, message: nextcord.Message) -> nextcord.Message | None:
        ref = message.reference
        if ref is None:
            return None
        resolved = ref.resolved if isinstance(ref.resolved, nextcord.Message) else ref.cached_message
        return resolved

    def _incoming(self, message: nextcord.Message) -> Incoming:
        me = self.bot.user
        replied = self._replied_message(message)
        channel = message.channel
        return Incoming(
            author_is_self=me is not None and message.author.id == me.id,
            author_is_bot=message.author.bot,
            is_dm=isinstance(channel, (nextcord.DMChannel, nextcord.GroupChannel)),
            mentions_bot=me is not None and any(u.id == me.id for u in message.mentions),
            replies_to_bot=replied is not None and me is not None and replied.author.id == me.id,
            channel_id=channel.id,
            parent_channel_id=getattr(channel, "parent_id", None),
        )

    @commands.Cog.listener()
    async def on_message(self, message: nextcord.Message) -> None:
        if message.author.bot:
            return
        prefix = self.services.config.discord.command_prefix
        if prefix and message.content.startswith(prefix):
            return  # a command: the command framework handles it
        if message.reference is not None and correction_text(message.content) is not None:
            return  # a correction: the feedback cog handles it
        cfg = self.services.config.discord
        heard: str | None = None
        if not should_answer(self._incoming(message), reply_mode=cfg.reply_mode,
                             allowed_channel_ids=cfg.allowed_channel_ids, answer_dms=cfg.answer_dms):
            heard = await self._addressed_aloud(message)
            if heard is None:
                return
        refused = over_limit(self.services.limiter, message.author.id, "messages")
        if refused is not None:
            await slow_down(message, refused[0], warn=refused[1])
            return
        try:
            async with self.services.limits.generating():
                await self.answer(message, heard=heard)
        except Exception as exc:  # noqa: BLE001 - one friendly reply, traceback logged
            await replies.report(functools.partial(message.reply, mention_author=False), exc)

    def _names(self, message: nextcord.Message) -> list[str]:
        """What people call the bot aloud: the wake words, its user name and its name in this server."""
        names = list(self.services.config.voice.wake_words)
        me = self.bot.user
        if me is not None:
            names += [me.name, me.display_name]
        member = message.guild.me if message.guild is not None else None
        if member is not None:
            names.append(member.display_name)
        return list(dict.fromkeys(n for n in names if n))

    async def _addressed_aloud(self, message: nextcord.Message) -> str | None:
        """The transcript of a server-channel recording that opens by addressing the bot, else None.

        A voice message cannot carry a mention, so its words must say whom it is for; see
        `VoiceMessages.addressed_transcript` for what deciding costs."""
        audio = [a for a in message.attachments if is_audio(a.filename, a.content_type)]
        voice = self.services.voice_messages
        if not audio or voice is None or self.services.speech is None or message.guild is None:
            return None
        try:
            return await voice.addressed_transcript(audio[0], self._names(message))
        except AssistantError as exc:  # not addressed to us (yet): no error reply into other people's talk
            logger.info("Did not listen to recording %s: %s", message.id, exc)
            return None

    async def _said(self, message: nextcord.Message) -> list[Said]:
        """Earlier messages: the reply chain if there is one, else recent channel/thread history."""
        limit = self.services.config.discord.history_messages
        me = self.bot.user
        chain: list[nextcord.Message] = []
        if message.reference is not None:
            current: nextcord.Message | None = self._replied_message(message)
            ref_id = message.reference.message_id
            while len(chain) < max(limit, 1):
                if current is None and ref_id is not None:
                    try:
                        current = await message.channel.fetch_message(ref_id)
                    except nextcord.HTTPException:
                        break
                if current is None:
                    break
                chain.append(current)
                ref = current.reference
                ref_id = ref.message_id if ref is not None else None
                current = self._replied_message(current)
                if ref_id is None:
                    break
            chain.reverse()
        elif limit > 0:
            chain = [m async for m in message.channel.history(limit=limit, before=message)]
            chain.reverse()
        return [Said(me is not None and m.author.id == me.id, m.author.bot,
                     strip_mentions(m.content, me.id) if me else m.content,
                     to_me=me is not None and any(u.id == me.id for u in m.mentions), id=m.id,
                     reply_to=m.reference.message_id if m.reference is not None else None) for m in chain]

    async def question_of(self, message: nextcord.Message, timing: TurnTiming, heard: str | None = None) -> str:
        """The text to answer: the message text, or the transcript of its audio attachment
        (`heard` when deciding to answer already recognised it)."""
        me = self.bot.user
        text = strip_mentions(message.content, me.id) if me else message.content
        audio = [a for a in message.attachments if is_audio(a.filename, a.content_type)]
        voice = self.services.voice_messages
        if heard is None and audio and voice is not None:
            heard = await voice.transcribe_attachment(audio[0])
        if heard is not None:
            timing.recognised = time.monotonic()
            timing.kind = "voice"
            text = f"{text}\n{heard}".strip() if text else heard
        return text

    async def answer(self, message: nextcord.Message, heard: str | None = None) -> None:
        services = self.services
        config = services.config
        timing = TurnTiming()
        question = await self.question_of(message, timing, heard)
        if not question:
            await message.reply("Ask me something in words (or send a voice message).", mention_author=False)
            return
        earlier = to_turns(await self._said(message), command_prefix=config.discord.command_prefix)
        system_prompt = await services.system_prompt_for(message.channel)
        notes = await asyncio.to_thread(services.memory.notes, question)  # embeds the question: off the loop
        prompt: list[Message] = build_prompt(services.backend, system_prompt=system_prompt,
                                             earlier=earlier, question=question,
                                             context_tokens=config.model.context_tokens,
                                             reply_tokens=config.model.max_new_tokens,
                                             notes=notes)
        deltas = services.backend.stream(prompt, default_options(config.model))
        calls = services.calls
        speaker = calls.speaker_for(message) if calls is not None else None
        async def record(text: str, first: Any) -> None:
            await asyncio.to_thread(
                services.store.record_turn, conversation_key(message.channel), prompt=question, reply=text,
                user_id=str(message.author.id), prompt_external_id=str(message.id), reply_external_id=str(first.id))

        result = await replies.stream_reply(message.channel, deltas, throttle=services.throttle, typing=services.typing,
                                            reference=message, on_complete=record,
                                            on_delta=speaker.feed if speaker is not None else None)
        timing.first_token, timing.done, timing.tokens = result.first_token, result.done, result.deltas
        if speaker is not None:
            timing.first_audio = await speaker.finish()
        services.latency.add(timing)
        vm = services.voice_messages
        if timing.kind == "voice" and vm is not None and result.text:
            await vm.reply_with_voice(message, result.text, timing)


COGS = (Chat,)
