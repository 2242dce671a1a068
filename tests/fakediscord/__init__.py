"""A local, Discord-compatible server for end-to-end tests of a real nextcord bot.

REST v10, the gateway (with RESUME), interactions, a CDN for attachments, Discord
rate limits, and the voice gateway + encrypted RTP over UDP, all on 127.0.0.1.
See :class:`FakeDiscord` and ``tests/test_fakediscord.py`` for usage.
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
from .voice_rtp import VoiceCapture, VoicePacket

__all__ = [
    "Attachment",
    "Callback",
    "Channel",
    "Command",
    "FakeDiscord",
    "Injection",
    "InteractionRecord",
    "Message",
    "RequestRecord",
    "Revision",
    "Role",
    "User",
    "Violation",
    "VoiceCapture",
    "VoicePacket",
]
