"""The voice gateway (websocket over TLS, protocol v8) and simulated speakers.

Flow, as on Discord: the main gateway grants a token (VOICE_SERVER_UPDATE); the
bot opens ``wss://endpoint/?v=8``, IDENTIFYs with that token, gets READY with
an SSRC and our UDP port, does IP discovery, SELECT_PROTOCOLs a transport mode
and receives the secret key in SESSION_DESCRIPTION.  Modes offered: ``modes``
(AES-GCM first, then XChaCha20, as Discord).  DAVE: ``dave_protocol_version`` 0
(default) is transport encryption only; 1 runs a real MLS group with the gateway as
external sender (see ``voice_dave``), with simulated members added by ``dave_join``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from .state import World
from .voice_dave import DaveCall
from .voice_rtp import AES256_GCM, XCHACHA20, FRAME_SAMPLES, OPUS_SILENCE, UdpPeer, VoiceUdp, encode_opus, seal_rtp

SUPPORTED_MODES = [AES256_GCM, XCHACHA20]  # Discord's order; a client takes the first it supports


@dataclass
class VoiceGrant:
    token: str
    user_id: int
    guild_id: int
    channel_id: int
    session_id: str


@dataclass
class VoiceConnection:
    """One voice websocket session (the bot's side of a call)."""

    grant: VoiceGrant
    ws: web.WebSocketResponse = field(repr=False)
    ssrc: int
    peer: UdpPeer
    mode: str | None = None
    selected_address: tuple[str, int] | None = None
    dave_protocol_version: int | None = None
    speaking: list[tuple[float, int]] = field(default_factory=list)
    heartbeats: int = 0
    resumed: int = 0
    binary_ops: list[int] = field(default_factory=list)
    opened_at: float = field(default_factory=time.monotonic)
    ready_at: float | None = None
    closed_at: float | None = None
    seq: int = 0
    _send_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    async def send(self, op: int, d: Any, *, numbered: bool = True) -> None:
        frame: dict[str, Any] = {"op": op, "d": d}
        if numbered:
            self.seq += 1
            frame["seq"] = self.seq
        async with self._send_lock:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_str(json.dumps(frame))

    @property
    def ready(self) -> bool:
        return self.ready_at is not None and self.closed_at is None


@dataclass
class Impairment:
    """Network trouble on a simulated speaker's packets (seeded: a test sees the same pattern
    every run). ``loss`` drops each packet with that probability; ``reorder`` swaps a packet
    with the next one with that probability (the pair arrives out of order)."""

    loss: float = 0.0
    reorder: float = 0.0
    seed: int = 0
    tamper: tuple[int, ...] = ()  # frame indices whose DAVE ciphertext gets one byte flipped


@dataclass
class SpokenClip:
    """One ``speak`` call: when its first packet was sent (``time.monotonic()``) and what
    happened to its packets."""

    user_id: int
    frames: int
    started_at: float | None = None
    sent: int = 0
    dropped: int = 0
    reordered: int = 0


def impaired_order(count: int, impairment: Impairment) -> tuple[list[int], int, int]:
    """Which packet indices to send, in which order: ``(order, dropped, reordered)``."""
    rng = random.Random(impairment.seed)
    kept = [i for i in range(count) if rng.random() >= impairment.loss]
    reordered = 0
    i = 0
    while i < len(kept) - 1:
        if rng.random() < impairment.reorder:
            kept[i], kept[i + 1] = kept[i + 1], kept[i]
            reordered += 1
            i += 2
        else:
            i += 1
    return kept, count - len(kept), reordered


class VoiceGateway:
    def __init__(self, world: World, udp: VoiceUdp) -> None:
        self.world, self.udp = world, udp
        self.endpoint = ""
        self.udp_port = 0
        self.heartbeat_interval_ms = 13750.0
        # 0 = "no DAVE, transport encryption only".  nextcord 3.2 then logs a harmless
        # "Failed to set up ratchet" error; None omits the field and that log line.
        self.dave_protocol_version: int | None = 0
        self.modes: list[str] = list(SUPPORTED_MODES)  # offered in READY, in this order
        self.dave_calls: dict[int, DaveCall] = {}  # channel id → DAVE group (protocol version 1)
        self.grants: dict[str, VoiceGrant] = {}
        self.connections: list[VoiceConnection] = []
        self._next_ssrc = 1000
        self._speaker_ssrc: dict[int, int] = {}
        self.spoken: list[SpokenClip] = []
        self._streams: dict[int, tuple[int, int, int]] = {}  # user → next (sequence, timestamp, nonce)
        self._tasks: set[asyncio.Task[None]] = set()

    def grant(self, user_id: int, guild_id: int, channel_id: int, session_id: str) -> VoiceGrant:
        g = VoiceGrant(secrets.token_hex(8), user_id, guild_id, channel_id, session_id)
        self.grants[g.token] = g
        return g

    def allocate_ssrc(self) -> int:
        self._next_ssrc += 1
        return self._next_ssrc

    def active(self, user_id: int | None = None) -> VoiceConnection | None:
        uid = self.world.bot.id if user_id is None else user_id
        for conn in reversed(self.connections):
            if conn.grant.user_id == uid and conn.ready:
                return conn
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(timeout=1.0, max_msg_size=0)
        await ws.prepare(request)
        conn: VoiceConnection | None = None
        await ws.send_str(json.dumps({"op": 8, "d": {"v": 8, "heartbeat_interval": self.heartbeat_interval_ms}}))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    if conn is not None and len(msg.data) > 0:
                        conn.binary_ops.append(msg.data[0])
                        call = self.dave_calls.get(conn.grant.channel_id)
                        if call is not None and conn.grant.user_id == call.bot_id:
                            await call.from_bot(msg.data[0], bytes(msg.data[1:]))
                    continue
                if msg.type != WSMsgType.TEXT:
                    break
                try:
                    frame = json.loads(msg.data)
                    op, d = int(frame["op"]), frame.get("d") or {}
                except (ValueError, KeyError, TypeError):
                    await ws.close(code=4002, message=b"Failed to decode payload")
                    break
                if op in (0, 7):
                    conn = await self._identify_or_resume(ws, op, d, conn)
                    if conn is None:
                        break
                elif conn is None:
                    await ws.close(code=4003, message=b"Not authenticated")
                    break
                elif not await self._on_frame(conn, op, d):
                    break
        finally:
            if conn is not None:
                conn.closed_at = time.monotonic()
            self.world.notify()
        return ws

    async def _identify_or_resume(
        self, ws: web.WebSocketResponse, op: int, d: dict[str, Any], conn: VoiceConnection | None
    ) -> VoiceConnection | None:
        grant = self.grants.get(str(d.get("token")))
        valid = (
            grant is not None
            and str(grant.guild_id) == str(d.get("server_id"))
            and grant.session_id == d.get("session_id")
            and (op == 7 or str(grant.user_id) == str(d.get("user_id")))
        )
        if not valid or grant is None:
            await ws.close(code=4004 if grant is None else 4006, message=b"Authentication failed")
            return None
        if op == 7:
            old = next((c for c in reversed(self.connections) if c.grant is grant), None)
            if old is None:
                await ws.close(code=4006, message=b"Session no longer valid")
                return None
            old.ws, old.closed_at = ws, None
            old.resumed += 1
            await old.send(9, None)
            return old
        if conn is not None:
            await ws.close(code=4005, message=b"Already authenticated")
            return None
        ssrc = self.allocate_ssrc()
        peer = UdpPeer(ssrc, grant.user_id)
        self.udp.peers[ssrc] = peer
        conn = VoiceConnection(grant, ws, ssrc, peer)
        conn.dave_protocol_version = int(d.get("max_dave_protocol_version") or 0)
        self.connections.append(conn)
        await conn.send(2, {
            "ssrc": ssrc, "ip": "127.0.0.1", "port": self.udp_port,
            "modes": list(self.modes), "heartbeat_interval": 1, "experiments": [],
        })
        return conn

    async def _on_frame(self, conn: VoiceConnection, op: int, d: dict[str, Any]) -> bool:
        if op == 3:
            conn.heartbeats += 1
            await conn.send(6, {"t": d.get("t")}, numbered=False)
        elif op == 1:
            data = d.get("data") or {}
            mode = data.get("mode")
            if mode not in self.modes:
                await conn.ws.close(code=4016, message=b"Unknown encryption mode")
                return False
            conn.mode = mode
            conn.selected_address = (str(data.get("address")), int(data.get("port") or 0))
            conn.peer.secret_key = os.urandom(32)
            conn.peer.mode = mode
            description: dict[str, Any] = {
                "audio_codec": "opus", "video_codec": "H264", "media_session_id": secrets.token_hex(16),
                "mode": mode, "secret_key": list(conn.peer.secret_key), "secure_frames_version": 0,
            }
            if self.dave_protocol_version is not None:
                description["dave_protocol_version"] = self.dave_protocol_version
            if self.dave_protocol_version == 1:
                self._open_dave_call(conn)
            await conn.send(4, description)
            conn.ready_at = time.monotonic()
            others = [
                str(v.user_id) for v in self.world.guild.voice_states.values()
                if v.channel_id == conn.grant.channel_id and v.user_id != conn.grant.user_id
            ]
            if others:
                await conn.send(11, {"user_ids": others})
        elif op == 5:
            conn.speaking.append((time.monotonic(), int(d.get("speaking", 0))))
        elif op == 23 and (call := self.dave_calls.get(conn.grant.channel_id)) is not None:
            await call.bot_ready(int(d.get("transition_id", -1)))
        elif op in (23, 31):  # DAVE transition ready / invalid commit: nothing to do at v0
            pass
        else:
            await conn.ws.close(code=4001, message=b"Unknown opcode")
            return False
        self.world.notify()
        return True

    # -- DAVE -------------------------------------------------------------------------------
    def _open_dave_call(self, conn: VoiceConnection) -> None:
        channel_id, bot_id = conn.grant.channel_id, conn.grant.user_id

        async def send_to_bot(message: Any) -> None:
            bot = self.active(bot_id)
            if bot is None:
                return
            if isinstance(message.payload, bytes):
                bot.seq += 1
                async with bot._send_lock:
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        await bot.ws.send_bytes(message.binary_frame(bot.seq))
            else:
                await bot.send(message.op, message.payload)

        if channel_id not in self.dave_calls:
            call = self.dave_calls[channel_id] = DaveCall(channel_id, bot_id, send_to_bot)
            self.udp.dave_open = lambda user_id, frame: call.decrypt_from_bot(frame) if user_id == bot_id else frame

    async def dave_join(self, user_id: int) -> Any:
        """``user_id`` joins the bot's call as a DAVE member (a `SimMember`); returns it."""
        conn = self.active()
        call = self.dave_calls.get(conn.grant.channel_id) if conn is not None else None
        if call is None:
            raise RuntimeError("no DAVE call: set dave_protocol_version = 1 and let the bot join first")
        return await call.add_member(user_id, self._speaker_ssrc.setdefault(user_id, self.allocate_ssrc()))

    def _dave_member(self, conn: VoiceConnection, user_id: int) -> Any:
        call = self.dave_calls.get(conn.grant.channel_id)
        return call.members.get(user_id) if call is not None else None

    # -- simulated people talking to the bot --------------------------------------------
    def speak(self, user_id: int, pcm: np.ndarray, *, realtime: bool = True,
              impairment: Impairment | None = None) -> asyncio.Task[None]:
        """Send ``pcm`` (48 kHz int16) to the bot as ``user_id``'s voice, paced every 20 ms
        (a lost packet leaves its 20 ms slot empty, as on a real network)."""
        conn = self.active()
        if conn is None or conn.peer.address is None or conn.peer.secret_key is None:
            raise RuntimeError("the bot has no ready voice connection (join voice first)")
        clip = SpokenClip(user_id, 0)
        self.spoken.append(clip)
        task = asyncio.create_task(self._speak(conn, clip, pcm, realtime, impairment or Impairment()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _speak(self, conn: VoiceConnection, clip: SpokenClip, pcm: np.ndarray, realtime: bool,
                     impairment: Impairment) -> None:
        user_id = clip.user_id
        ssrc = self._speaker_ssrc.setdefault(user_id, self.allocate_ssrc())
        await conn.send(5, {"user_id": str(user_id), "ssrc": ssrc, "speaking": 1})
        packets = await asyncio.to_thread(encode_opus, pcm)
        member = self._dave_member(conn, user_id)
        if member is not None:  # DAVE: end-to-end encrypted by the speaker (silence frames stay plain)
            packets = [member.encrypt(p) for p in packets]
            for i in impairment.tamper:
                if i < len(packets):
                    frame = bytearray(packets[i])
                    frame[len(frame) // 2] ^= 0x55
                    packets[i] = bytes(frame)
        packets += [OPUS_SILENCE] * 5
        clip.frames = len(packets)
        order, clip.dropped, clip.reordered = impaired_order(len(packets), impairment)
        start = clip.started_at = time.monotonic()
        # a client's RTP stream goes on across talk spurts: sequence, timestamp and nonce continue
        seq0, ts0, counter0 = self._streams.setdefault(
            user_id, (secrets.randbelow(1 << 15), secrets.randbelow(1 << 30), secrets.randbelow(1 << 30)))
        self._streams[user_id] = (seq0 + len(packets), ts0 + len(packets) * FRAME_SAMPLES, counter0 + len(order))
        for slot, i in enumerate(order):
            assert conn.peer.secret_key is not None and conn.peer.address is not None
            packet = seal_rtp(
                (seq0 + i) & 0xFFFF, (ts0 + i * FRAME_SAMPLES) & 0xFFFFFFFF, ssrc, packets[i],
                conn.peer.secret_key, counter0 + slot, mode=conn.peer.mode,
            )
            if realtime:  # each packet goes out in its own time slot (a swapped pair: the later one first)
                at = start + max(i, order[slot - 1] if slot else 0) * 0.02
                await asyncio.sleep(max(0.0, at - time.monotonic()))
            self.udp.send(packet, conn.peer.address)
            clip.sent += 1
        await conn.send(5, {"user_id": str(user_id), "ssrc": ssrc, "speaking": 0})

    async def kick(self, user_id: int, code: int = 4014) -> None:
        conn = self.active(user_id)
        if conn is not None:
            await conn.ws.close(code=code, message=b"Disconnected")

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        for conn in self.connections:
            if not conn.ws.closed:
                with contextlib.suppress(Exception):
                    await conn.ws.close(code=1001)
