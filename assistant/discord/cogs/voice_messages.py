"""Voice messages and audio attachments: recognise them, and answer with a voice message too.

nextcord 3.2 cannot send voice messages (flag 1<<13 with `duration_secs` and `waveform` on
the attachment), so the reply is posted with one raw multipart request through nextcord's
own HTTP client, which keeps its rate-limit handling.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from typing import Any

import nextcord
import numpy as np
from nextcord.ext import commands

from assistant.discord import attachments
from assistant.discord.latency import TurnTiming
from assistant.discord.services import BotServices
from assistant.errors import AssistantError, NoSpeechError, VoiceNotAvailableError
from assistant.voice.turns import addressed_at_start

logger = logging.getLogger(__name__)

IS_VOICE_MESSAGE = 1 << 13
OPENING_S = 4.0  # seconds of an unaddressed recording heard to decide whether it speaks to the bot
RECOGNITION_RATE = 16_000
VOICE_FILE = "voice-message.ogg"


def voice_message_payload(duration_s: float, waveform: str, reply_to: int | None, channel_id: int) -> dict[str, Any]:
    """The payload_json of a voice-message post (no text content is allowed with it)."""
    payload: dict[str, Any] = {
        "flags": IS_VOICE_MESSAGE,
        "attachments": [{"id": 0, "filename": VOICE_FILE, "duration_secs": duration_s, "waveform": waveform}],
        "allowed_mentions": {"parse": [], "replied_user": False},
    }
    if reply_to is not None:
        payload["message_reference"] = {"message_id": str(reply_to), "channel_id": str(channel_id),
                                        "fail_if_not_exists": False}
    return payload


class VoiceMessages(commands.Cog):
    def __init__(self, bot: commands.Bot, services: BotServices) -> None:
        self.bot = bot
        self.services = services
        services.voice_messages = self

    def _limit(self) -> int:
        return min(self.services.config.security.max_attachment_bytes, self.services.config.speech.max_audio_bytes)

    def _speech(self) -> Any:
        speech = self.services.speech
        if speech is None:
            raise AssistantError("I can't listen to audio here: speech recognition is not set up "
                                 "(run `assistant models fetch`); please type your question.")
        return speech

    async def _samples(self, attachment: nextcord.Attachment) -> np.ndarray:
        """The attachment downloaded (within the limits) and decoded to 16 kHz mono."""
        speech = self._speech()
        raw = await attachments.fetch(self.services.http(), attachment, max_bytes=self._limit(), kind="audio")
        return np.asarray(await asyncio.to_thread(speech.decode, raw), dtype=np.float32)

    async def _recognise(self, samples: np.ndarray) -> str:
        try:
            return str((await self._speech().transcribe(samples)).text).strip()
        except NoSpeechError:
            return ""

    async def transcribe_attachment(self, attachment: nextcord.Attachment) -> str:
        text = await self._recognise(await self._samples(attachment))
        if not text:
            raise NoSpeechError("I couldn't hear any words in that recording; try again a little closer "
                                "to the microphone.")
        logger.debug("Heard: %s", text)  # what people say is private: not in the INFO log
        return text

    async def addressed_transcript(self, attachment: nextcord.Attachment, names: list[str]) -> str | None:
        """The transcript of a recording that opens by addressing the bot, else None.

        Only the first `OPENING_S` seconds are recognised to decide: a voice message among
        people in a server channel costs at most that much recognition, and its words are
        dropped (never logged or stored). An addressed recording longer than that is then
        recognised in full, once."""
        samples = await self._samples(attachment)
        opening = samples[: int(OPENING_S * RECOGNITION_RATE)]
        text = await self._recognise(opening)
        if not addressed_at_start(text, names):
            return None
        if len(opening) < len(samples):
            text = await self._recognise(samples)
        logger.debug("Heard (addressed): %s", text)
        return text or None

    async def reply_with_voice(self, message: nextcord.Message, text: str, timing: TurnTiming) -> None:
        speech = self.services.speech
        if speech is None or not self.services.config.discord.voice_message_replies:
            return
        from assistant.audio import voice_message

        try:
            audio = await speech.synthesize(text)
            if timing.first_audio is None:
                timing.first_audio = time.monotonic()
            vm = await asyncio.to_thread(voice_message, audio.samples, audio.rate)
            await self.send_voice_message(message.channel, vm.data, vm.duration_s, vm.waveform, reply_to=message.id)
        except VoiceNotAvailableError as exc:  # e.g. a Russian answer and no Russian voice: say so in one line
            async with self.services.throttle.pace(message.channel.id):
                await message.channel.send(f"-# {exc}")
        except Exception as exc:  # noqa: BLE001 - the text answer is already there
            logger.warning("Could not send a voice reply: %s", exc, exc_info=not isinstance(exc, AssistantError))

    async def send_voice_message(self, channel: Any, data: bytes, duration_s: float, waveform: str, *,
                                 reply_to: int | None = None) -> Any:
        from nextcord.http import Route

        payload = voice_message_payload(duration_s, waveform, reply_to, channel.id)
        file = nextcord.File(io.BytesIO(data), filename=VOICE_FILE)
        form: list[dict[str, Any]] = [{"name": "files[0]", "value": file.fp, "filename": VOICE_FILE, "content_type": "audio/ogg"},
                {"name": "payload_json", "value": json.dumps(payload)}]
        route = Route("POST", "/channels/{channel_id}/messages", channel_id=channel.id)
        try:
            async with self.services.throttle.pace(channel.id):
                return await self.bot.http.request(route, form=form, files=[file])
        finally:
            file.close()


COGS = (VoiceMessages,)
