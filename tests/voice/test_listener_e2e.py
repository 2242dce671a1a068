"""nextcord end to end through the fake Discord server: the bot joins with our client,
Alice speaks over encrypted RTP (op 5 first), and the listener hears one utterance of hers."""

from __future__ import annotations

import asyncio

import nextcord
import pytest
from nextcord.ext import commands

from assistant.config import VoiceConfig
from assistant.discord.voice_recv import ListeningVoiceClient, VoiceListener
from assistant.voice.receiver import SpeechEvent
from assistant.voice.turns import Event
from tests.davesim.speaker import voice_like
from tests.fakediscord import FakeDiscord
from tests.fakediscord.fixtures import fake_discord  # noqa: F401  (fixture)

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


async def test_bot_hears_a_speaker_through_nextcord(fake_discord: FakeDiscord) -> None:
    d = fake_discord
    intents = nextcord.Intents.default()
    bot = commands.Bot(intents=intents, guild_ready_timeout=0.05)
    events: list[SpeechEvent] = []
    ended = asyncio.Event()

    def on_event(event: SpeechEvent) -> None:
        events.append(event)
        if event.kind is Event.ENDED:
            ended.set()

    async with d.run_client(bot):
        d.join_voice(d.alice)
        channel = bot.get_channel(d.voice_channel.id)
        assert isinstance(channel, nextcord.VoiceChannel)
        vc = await channel.connect(timeout=10, cls=ListeningVoiceClient)
        assert isinstance(vc, ListeningVoiceClient)
        await d.wait_for_bot_voice()
        assert await vc.wait_until_can_encrypt()
        listener = VoiceListener(vc, on_event, VoiceConfig(silence_ms=400))
        listener.start()
        await d.speak(d.alice, voice_like(1.2))
        await asyncio.wait_for(ended.wait(), 5)
        listener.stop()
        await vc.disconnect()

    utterances = [e for e in events if e.kind is Event.ENDED]
    assert [e.user_id for e in utterances] == [d.alice.id]
    assert abs(utterances[0].speech_end - utterances[0].speech_start - 1.2) < 0.3
    assert listener.stats.undecryptable == 0 and listener.stats.unknown_ssrc == 0
    assert not listener.receiver.speakers, "stop() dropped the buffered audio"
