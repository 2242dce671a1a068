"""The fake Discord server against a real nextcord 3.2 client (no mocks of nextcord).

These pin down the behaviours end-to-end tests of the assistant rely on: chat
with streamed edits, files both ways, slash commands and components, gateway
RESUME, rate-limit handling, and voice over the real encrypted RTP path.
"""

from __future__ import annotations

import asyncio
import io
import json
import struct
import time
import zlib
from typing import Any

import aiohttp
import numpy as np
import nextcord
import pytest
from nextcord.ext import commands

from tests.fakediscord import FakeDiscord
from tests.fakediscord.fixtures import fake_discord  # noqa: F401  (fixture)
from tests.fakediscord.voice_rtp import VoiceCapture, open_rtp

pytestmark = pytest.mark.asyncio

FRAME_BYTES = 3840  # 20 ms of 48 kHz stereo s16


def make_bot(*, message_content: bool = True) -> commands.Bot:
    intents = nextcord.Intents.default()
    intents.message_content = message_content
    # guild_ready_timeout: nextcord otherwise waits 2 s for more GUILD_CREATEs.
    return commands.Bot(intents=intents, guild_ready_timeout=0.05)


def tiny_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


class Tone(nextcord.AudioSource):
    """A sine as 20 ms stereo PCM frames: no FFmpeg, only nextcord's Opus encoder."""

    def __init__(self, hz: float, seconds: float) -> None:
        t = np.arange(int(48000 * seconds)) / 48000
        mono = (0.4 * np.sin(2 * np.pi * hz * t) * 32767).astype(np.int16)
        self.pcm = np.repeat(mono[:, None], 2, axis=1).tobytes()
        self.pos = 0

    def read(self) -> bytes:
        chunk = self.pcm[self.pos : self.pos + FRAME_BYTES]
        self.pos += FRAME_BYTES
        return chunk if len(chunk) == FRAME_BYTES else b""


def dominant_hz(mono: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(mono * np.hanning(len(mono))))
    return float(np.argmax(spectrum) * 48000 / len(mono))


async def test_chat_streamed_edits_reactions_and_files_both_ways(fake_discord: FakeDiscord) -> None:
    d = fake_discord
    bot = make_bot()
    seen: dict[str, Any] = {}
    png = tiny_png(3, 2)

    @bot.event
    async def on_message(message: nextcord.Message) -> None:
        if message.author.bot:
            return
        note = message.attachments[0]
        seen.update(voice=message.flags.is_voice_message, type=note.content_type,
                    duration=note.duration_secs, data=await note.read())
        reply = await message.reply("Listening")
        text = "Listening"
        for word in (" to", " your", f" {len(seen['data'])}-byte note."):
            text += word
            await reply.edit(content=text)
        await message.add_reaction("👂")
        await message.channel.send("chart:", file=nextcord.File(io.BytesIO(png), "chart.png"))

    async with d.run_client(bot):
        guild = bot.get_guild(d.world.guild.id)
        assert guild is not None and bot.user is not None and bot.user.id == d.bot.id
        assert {"general", "random"} <= {c.name for c in guild.text_channels}
        assert [c.name for c in guild.voice_channels] == ["Voice"]

        ogg = b"OggS" + bytes(range(256)) * 8
        note = d.send_voice_message(d.general, d.alice, ogg, duration_secs=1.5)
        chart = await d.wait_for_bot_message(d.general, lambda m: m.attachments)
        reply = d.bot_messages(d.general)[0]
        await d.wait_for_reaction(note, "👂")

    assert seen == {"voice": True, "type": "audio/ogg", "duration": 1.5, "data": ogg}
    assert reply.history == ["Listening", "Listening to", "Listening to your",
                             f"Listening to your {len(ogg)}-byte note."]
    assert reply.referenced is note and note.author in reply.mentions
    stamps = [r.at for r in reply.revisions]
    assert stamps == sorted(stamps) and reply.edit_count == 3
    (uploaded,) = chart.attachments
    assert (uploaded.filename, uploaded.content_type, uploaded.data) == ("chart.png", "image/png", png)
    assert (uploaded.width, uploaded.height) == (3, 2)
    assert len(d.requests("CDN")) == 1
    assert d.rate_limits.violations == [] and d.unknown_routes == []


async def test_slash_command_defer_followup_autocomplete_and_button(fake_discord: FakeDiscord) -> None:
    d = fake_discord
    bot = make_bot()

    class More(nextcord.ui.View):
        @nextcord.ui.button(label="More", custom_id="more")
        async def more(self, button: nextcord.ui.Button, inter: nextcord.Interaction) -> None:
            await inter.response.send_message("Here is more.", ephemeral=True)

    @bot.slash_command(name="ask", description="Ask the assistant")
    async def ask(inter: nextcord.Interaction, prompt: str, topic: str,
                  image: nextcord.Attachment | None = None) -> None:
        await inter.response.defer()
        size = len(await image.read()) if image else 0
        await inter.followup.send(f"Thinking about {prompt}...")
        await inter.edit_original_message(content=f"{topic}: {prompt} -> 42 ({size} bytes)", view=More())

    @ask.on_autocomplete("topic")
    async def topics(inter: nextcord.Interaction, topic: str) -> None:
        await inter.response.send_autocomplete([t for t in ("maths", "music") if t.startswith(topic)])

    async with d.run_client(bot):
        (cmd,) = await d.wait_for_commands("ask")
        assert [o["name"] for o in cmd.options] == ["prompt", "topic", "image"]

        completion = d.invoke_autocomplete("ask", {"topic": "ma"}, focused="topic")
        assert [c["name"] for c in await d.wait_for_choices(completion)] == ["maths"]

        image = d.upload("photo.png", tiny_png(2, 2))
        asked = d.invoke_slash("ask", {"prompt": "meaning of life", "topic": "maths", "image": image})
        await d.wait_for_response(asked)
        answer = await d.wait_for_bot_message(d.general, lambda m: "42" in m.content)
        assert asked.response_type == 5 and answer is asked.original
        assert answer.history == ["", "Thinking about meaning of life...",
                                  f"maths: meaning of life -> 42 ({len(image.data)} bytes)"]

        clicked = d.click_button(answer, "more", user=d.bob)
        await d.wait_for_response(clicked)
        assert clicked.original is not None and clicked.original.content == "Here is more."
        assert clicked.original.ephemeral
    assert d.unknown_routes == []


@pytest.mark.parametrize("close_code", [4000, None], ids=["close-frame", "tcp-abort"])
async def test_dropped_gateway_resumes_and_replays_missed_events(
    fake_discord: FakeDiscord, close_code: int | None
) -> None:
    d = fake_discord
    bot = make_bot()

    @bot.event
    async def on_message(message: nextcord.Message) -> None:
        if not message.author.bot:
            await message.channel.send(f"echo: {message.content}")

    async with d.run_client(bot):
        d.send_message(d.general, d.alice, "before")
        await d.wait_for_bot_message(d.general, lambda m: m.content == "echo: before")
        assert d.drop_gateway(close_code) == 1
        d.send_message(d.general, d.alice, "while away")  # buffered, replayed on RESUME
        session = await d.wait_for_resume()
        await d.wait_for_bot_message(d.general, lambda m: m.content == "echo: while away")

    ops = [f.op for f in d.gateway.received]
    assert ops.count(2) == 1 and ops.count(6) == 1  # one IDENTIFY, one RESUME
    assert session.resumes == 1 and len(d.sessions) == 1


async def test_injected_429_is_waited_out_then_succeeds(fake_discord: FakeDiscord) -> None:
    d = fake_discord
    bot = make_bot()

    @bot.event
    async def on_message(message: nextcord.Message) -> None:
        if not message.author.bot:
            await message.channel.send("pong")

    async with d.run_client(bot):
        injection = d.inject_429("POST /channels/{channel_id}/messages", count=1, retry_after=0.3)
        d.send_message(d.random, d.alice, "ping")
        await d.wait_for_bot_message(d.random, lambda m: m.content == "pong")

    sends = d.requests("POST /channels/{channel_id}/messages")
    assert [r.status for r in sends] == [429, 200]
    waited = sends[1].at - sends[0].at
    # nextcord waits at least retry_after, rounded up to its learnt bucket reset (1 s here).
    assert 0.3 <= waited < 3.0, waited
    assert len(injection.hits) == 1 and injection.remaining == 0


async def test_voice_sine_round_trip_through_tls_gateway_and_encrypted_rtp(
    fake_discord: FakeDiscord,
) -> None:
    d = fake_discord
    bot = make_bot()
    async with d.run_client(bot):
        d.join_voice(d.alice)
        voice = bot.get_channel(d.voice_channel.id)
        assert isinstance(voice, nextcord.VoiceChannel)
        vc: nextcord.VoiceClient = await voice.connect(timeout=10)
        conn = await d.wait_for_bot_voice()
        assert conn.mode == "aead_xchacha20_poly1305_rtpsize" and conn.peer.address is not None

        finished = asyncio.Event()
        started = time.monotonic()
        vc.play(Tone(660, 1.0), after=lambda err: bot.loop.call_soon_threadsafe(finished.set))
        await asyncio.wait_for(finished.wait(), 5)
        heard = await d.wait_for_voice_audio()

        # The other direction: alice speaks, the bot's socket gets Discord-style RTP.
        t = np.arange(24000) / 48000
        await d.speak(d.alice, (0.3 * np.sin(2 * np.pi * 880 * t) * 32767).astype(np.int16),
                      realtime=False)
        relayed = VoiceCapture(0, d.alice.id)
        key = bytes(vc.secret_key)
        while True:
            try:
                packet = vc.socket.recv(4096)
            except BlockingIOError:
                break
            seq, ts, _, opus = open_rtp(packet, key)
            relayed.add(time.monotonic(), seq, ts, opus)
        await vc.disconnect()

    assert d.udp.decrypt_errors == 0 and heard.decode_errors == 0
    assert abs(dominant_hz(heard.mono()) - 660) < 5
    assert 0.95 <= heard.seconds <= 1.05
    assert heard.first_packet_at is not None and heard.last_packet_at is not None
    assert heard.first_packet_at - started < 0.5
    assert 0.8 < heard.last_packet_at - heard.first_packet_at < 1.3  # real-time pacing
    assert [flag for _, flag in conn.speaking][:3] == [0, 1, 0]  # key ack, talk, done
    assert abs(dominant_hz(relayed.mono()) - 880) < 10


async def test_discord_rules_without_a_bot(fake_discord: FakeDiscord) -> None:
    """Wire-level behaviours: exact JSON content type, 404/401 shapes, 2000-char limit,
    and the 5-edits-per-5-s bucket (429 when enforced, counted either way)."""
    d = fake_discord
    auth = {"Authorization": "Bot test"}
    sent = d.world.create_message(d.general, d.bot, "draft")
    edit_url = f"{d.api_base}/channels/{d.general.id}/messages/{sent.id}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{d.api_base}/nope", headers=auth) as r:
            assert (r.status, r.headers["Content-Type"]) == (404, "application/json")
            assert json.loads(await r.text()) == {"message": "404: Not Found", "code": 0}
        async with http.get(f"{d.api_base}/users/@me") as r:
            assert r.status == 401
        async with http.post(f"{d.api_base}/channels/{d.general.id}/messages", headers=auth,
                             json={"content": "x" * 2001}) as r:
            assert r.status == 400 and (await r.json(content_type=None))["code"] == 50035
        statuses = []
        for i in range(6):
            async with http.patch(edit_url, headers=auth, json={"content": f"v{i}"}) as r:
                statuses.append(r.status)
                if r.status == 429:
                    body = await r.json(content_type=None)
                    assert r.headers["X-RateLimit-Remaining"] == "0" and body["retry_after"] > 0
        assert statuses == [200] * 5 + [429]
        d.rate_limits.enforce = False
        async with http.patch(edit_url, headers=auth, json={"content": "late"}) as r:
            assert r.status == 200
    assert [v.enforced for v in d.rate_limits.violations] == [True, False]
    assert sent.history == ["draft", "v0", "v1", "v2", "v3", "v4", "late"]
    assert d.unknown_routes == ["GET /nope"]


async def test_message_content_intent_is_enforced(fake_discord: FakeDiscord) -> None:
    d = fake_discord
    bot = make_bot(message_content=False)
    contents: list[str] = []

    @bot.event
    async def on_message(message: nextcord.Message) -> None:
        contents.append(message.content)

    async with d.run_client(bot):
        d.send_message(d.general, d.alice, "secret")
        d.send_message(d.general, d.alice, f"{d.bot.mention} hi")
        await d.wait_until(lambda: len(contents) == 2, timeout=5)
    assert contents == ["", f"{d.bot.mention} hi"]


async def test_impaired_order_drops_and_swaps_reproducibly() -> None:
    from tests.fakediscord.voice import Impairment, impaired_order

    order, dropped, reordered = impaired_order(500, Impairment(loss=0.1, reorder=0.1, seed=3))
    assert (order, dropped, reordered) == impaired_order(500, Impairment(loss=0.1, reorder=0.1, seed=3))
    assert len(order) + dropped == 500 and 25 < dropped < 80 and reordered > 10
    assert sorted(order) == sorted(set(order)) and order != sorted(order)
    assert impaired_order(5, Impairment()) == ([0, 1, 2, 3, 4], 0, 0)
