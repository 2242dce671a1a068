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
        if not should_answer(self._incoming(message), reply_mode=cfg.reply_mode,
                             allowed_channel_ids=cfg.allowed_channel_ids, answer_dms=cfg.answer_dms):
            return
        refused = over_limit(self.services.limiter, message.author.id, "messages")
        if refused is not None:
            await slow_down(message, refused[0], warn=refused[1])
            return
        try:
            async with self.services.limits.generating():
                await self.answer(message)
        except Exception as exc:  # noqa: BLE001 - one friendly reply, traceback logged
            await replies.report(functools.partial(message.reply, mention_author=False), exc)

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
                     strip_mentions(m.content, me.id) if me else m.content) for m in chain]

    async def question_of(self, message: nextcord.Message, timing: TurnTiming) -> str:
        """The text to answer: the message text, or the transcript of its audio attachment."""
        me = self.bot.user
        text = strip_mentions(message.content, me.id) if me else message.content
        audio = [a for a in message.attachments if is_audio(a.filename, a.content_type)]
        voice = self.bot.get_cog("VoiceMessages")
        if audio and voice is not None:
            heard = await voice.transcribe_attachment(audio[0])  # type: ignore[attr-defined]
            timing.recognised = time.monotonic()
            timing.kind = "voice"
            text = f"{text}\n{heard}".strip() if text else heard
        return text

    async def answer(self, message: nextcord.Message) -> None:
        services = self.services
        config = services.config
        timing = TurnTiming()
        question = await self.question_of(message, timing)
        if not question:
            await message.reply("Ask me something in words (or send a voice message).", mention_author=False)
            return
        earlier = to_turns(await self._said(message), command_prefix=config.discord.command_prefix)
        system_prompt = await services.system_prompt_for(message.channel)
        prompt: list[Message] = build_prompt(services.backend, system_prompt=system_prompt,
                                             earlier=earlier, question=question,
                                             context_tokens=config.model.context_tokens,
                                             reply_tokens=config.model.max_new_tokens)
        deltas = services.backend.stream(prompt, default_options(config.model))
        voice = self.bot.get_cog("Voice")
        speaker = voice.speaker_for(message) if voice is not None else None  # type: ignore[attr-defined]
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
        vm = self.bot.get_cog("VoiceMessages")
        if timing.kind == "voice" and vm is not None and result.text:
            await vm.reply_with_voice(message, result.text, timing)  # type: ignore[attr-defined]


COGS = (Chat,)
