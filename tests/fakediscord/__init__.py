"""A local, Discord-compatible server for end-to-end tests of a real nextcord bot.

REST v10, the gateway (with RESUME), interactions, a CDN for attachments, Discord
rate limits, and the voice gateway + encrypted RTP over UDP, all on 127.0.0.1::

    from tests.fakediscord import FakeDiscord
    from tests.fakediscord.fixtures import fake_discord  # noqa: F401  (pytest fixture)

    async def test_reply(fake_discord: FakeDiscord) -> None:
        bot = make_my_bot(guild_ready_timeout=0.05)      # any nextcord Client/Bot
        async with fake_discord.run_client(bot):           # login, gateway, on_ready
            fake_discord.send_message(fake_discord.general, fake_discord.alice, "hi")
            reply = await fake_discord.wait_for_bot_message(fake_discord.general)
            await fake_discord.wait_for_settled(reply)      # streamed edits are over
        assert reply.history[-1] == "Hello!"

Starting the server points ``nextcord.http.Route.BASE`` at it and makes in-process
aiohttp trust its voice TLS certificate; ``client_env()`` does the same for a bot
running in a subprocess.  See ``tests/test_fakediscord.py`` for every feature.
"""

from .models import (
    Attachment,
    Callback,
    Channel,
    Command,
    InteractionRecord,
    Message,
    Revision,
    Role,
    User,
)
from .ratelimit import Injection, Violation
from .rest import RequestRecord
from .server import FakeDiscord
from .voice import Impairment, SpokenClip
from .voice_rtp import VoiceCapture, VoicePacket

__all__ = [
    "Attachment",
    "Callback",
    "Channel",
    "Command",
    "FakeDiscord",
    "Impairment",
    "Injection",
    "InteractionRecord",
    "Message",
    "RequestRecord",
    "Revision",
    "Role",
    "SpokenClip",
    "User",
    "Violation",
    "VoiceCapture",
    "VoicePacket",
]
