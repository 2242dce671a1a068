"""The main gateway websocket: HELLO, IDENTIFY/READY, heartbeats, RESUME with
replay, INVALID_SESSION, intents and the message-content rule.

Every dispatch is numbered per session and kept in a replay buffer *before* it
is written, so a dropped connection loses nothing: a RESUME replays exactly the
frames after the client's last ``s``, as Discord does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from . import payloads
from .state import World

log = logging.getLogger("fakediscord")

GUILDS, GUILD_MEMBERS, GUILD_PRESENCES, GUILD_VOICE_STATES = 1, 1 << 1, 1 << 8, 1 << 7
GUILD_MESSAGES, GUILD_MESSAGE_REACTIONS, GUILD_MESSAGE_TYPING = 1 << 9, 1 << 10, 1 << 11
DIRECT_MESSAGES, DIRECT_MESSAGE_REACTIONS, DIRECT_MESSAGE_TYPING = 1 << 12, 1 << 13, 1 << 14
MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT

_GUILD_EVENTS = {
    "GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE", "CHANNEL_CREATE", "CHANNEL_UPDATE",
    "CHANNEL_DELETE", "THREAD_CREATE", "THREAD_UPDATE", "THREAD_DELETE",
}
_CONTENT_FIELDS = {"content": "", "embeds": [], "attachments": [], "components": []}


def required_intent(event: str, data: dict[str, Any]) -> int:
    in_guild = "guild_id" in data
    if event in _GUILD_EVENTS:
        return GUILDS
    if event in ("GUILD_MEMBER_ADD", "GUILD_MEMBER_UPDATE", "GUILD_MEMBER_REMOVE"):
        return GUILD_MEMBERS
    if event == "VOICE_STATE_UPDATE":
        return GUILD_VOICE_STATES
    if event in ("MESSAGE_CREATE", "MESSAGE_UPDATE", "MESSAGE_DELETE", "MESSAGE_DELETE_BULK"):
        return GUILD_MESSAGES if in_guild else DIRECT_MESSAGES
    if event.startswith("MESSAGE_REACTION_"):
        return GUILD_MESSAGE_REACTIONS if in_guild else DIRECT_MESSAGE_REACTIONS
    if event == "TYPING_START":
        return GUILD_MESSAGE_TYPING if in_guild else DIRECT_MESSAGE_TYPING
    return 0


def visible_to(intents: int, bot_id: int, event: str, data: dict[str, Any]) -> dict[str, Any] | None:
    """The payload this session may see, or None when its intents exclude the event."""
    need = required_intent(event, data)
    if need and not intents & need:
        return None
    if event in ("MESSAGE_CREATE", "MESSAGE_UPDATE") and not intents & MESSAGE_CONTENT:
        me = str(bot_id)
        private = "guild_id" not in data
        mine = data.get("author", {}).get("id") == me
        mentioned = any(u.get("id") == me for u in data.get("mentions", []))
        if not (private or mine or mentioned):
            data = {**data, **_CONTENT_FIELDS}
            data.pop("poll", None)
    return data


@dataclass
class GatewaySession:
    id: str
    intents: int
    identify: dict[str, Any]
    seq: int = 0
    buffer: deque[tuple[int, str]] = field(default_factory=lambda: deque(maxlen=5000))
    connection: GatewayConnection | None = None
    resumes: int = 0
    invalidated: bool = False
    presences: list[dict[str, Any]] = field(default_factory=list)
    voice_requests: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Frame:
    """A frame the bot sent us."""

    at: float
    op: int
    d: Any


class GatewayConnection:
    def __init__(self, ws: web.WebSocketResponse, request: web.Request, compress: bool) -> None:
        self.ws, self.request = ws, request
        self.zlib = zlib.compressobj() if compress else None
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.session: GatewaySession | None = None
        self.writer = asyncio.create_task(self._write())

    def send(self, frame: str) -> None:
        self.queue.put_nowait(frame)

    async def _write(self) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            while (frame := await self.queue.get()) is not None:
                if self.zlib is not None:
                    data = self.zlib.compress(frame.encode()) + self.zlib.flush(zlib.Z_SYNC_FLUSH)
                    await self.ws.send_bytes(data)
                else:
                    await self.ws.send_str(frame)

    async def close(self, code: int, *, abrupt: bool = False) -> None:
        """Stop writing (the replay buffer keeps unsent frames) and hang up."""
        self.queue.put_nowait(None)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self.writer), 1.0)
        if abrupt and self.request.transport is not None:
            self.request.transport.abort()
            return
        with contextlib.suppress(Exception):
            await self.ws.close(code=code)


class Gateway:
    def __init__(self, world: World, *, token: str | None, heartbeat_interval_ms: int = 41250) -> None:
        self.world, self.token = world, token
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.allowed_intents = (1 << 26) - 1  # all; narrow it to test a 4014 close
        self.sessions: dict[str, GatewaySession] = {}
        self.connections: set[GatewayConnection] = set()
        self.received: list[Frame] = []
        self.resume_url = ""
        self.on_voice_state: Callable[[GatewaySession, dict[str, Any]], None] = lambda s, d: None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- dispatch -----------------------------------------------------------------------
    def live_sessions(self) -> list[GatewaySession]:
        return [s for s in self.sessions.values() if not s.invalidated]

    def dispatch(self, event: str, data: dict[str, Any]) -> None:
        for session in self.live_sessions():
            self.dispatch_to(session, event, data)

    def dispatch_to(self, session: GatewaySession, event: str, data: dict[str, Any]) -> None:
        visible = visible_to(session.intents, self.world.bot.id, event, data)
        if visible is None:
            return
        session.seq += 1
        frame = json.dumps({"op": 0, "t": event, "s": session.seq, "d": visible})
        session.buffer.append((session.seq, frame))
        if session.connection is not None:
            session.connection.send(frame)

    # -- test controls ------------------------------------------------------------------
    def drop(self, code: int | None = 4000) -> int:
        """Hang up on every connected bot; ``code=None`` aborts TCP without a close frame."""
        dropped = 0
        for conn in list(self.connections):
            if conn.session is not None:
                conn.session.connection = None
            self._spawn(conn.close(code or 1006, abrupt=code is None))
            dropped += 1
        return dropped

    def send_op(self, op: int, d: Any) -> None:
        for conn in self.connections:
            conn.send(json.dumps({"op": op, "d": d, "s": None, "t": None}))

    def invalidate(self, *, resumable: bool = False) -> None:
        for session in self.live_sessions():
            if not resumable:
                session.invalidated = True
            if session.connection is not None:
                session.connection.send(json.dumps({"op": 9, "d": resumable, "s": None, "t": None}))

    async def close(self) -> None:
        for conn in list(self.connections):
            await conn.close(1001)
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- websocket ------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(timeout=1.0, compress=False, max_msg_size=0)
        await ws.prepare(request)
        if request.query.get("encoding", "json") != "json":
            await ws.close(code=4002, message=b"fakediscord speaks json only")
            return ws
        if request.query.get("v", "10") not in ("9", "10"):
            await ws.close(code=4012, message=b"Invalid API version")
            return ws
        conn = GatewayConnection(ws, request, request.query.get("compress") == "zlib-stream")
        self.connections.add(conn)
        hello = {"heartbeat_interval": self.heartbeat_interval_ms, "_trace": ["fakediscord"]}
        conn.send(json.dumps({"op": 10, "d": hello, "s": None, "t": None}))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    await conn.close(4002)
                    break
                try:
                    frame = json.loads(msg.data)
                    op, d = int(frame["op"]), frame.get("d")
                except (ValueError, KeyError, TypeError):
                    await conn.close(4002)
                    break
                self.received.append(Frame(time.monotonic(), op, d))
                code = self._on_frame(conn, op, d)
                if code:
                    await conn.close(code)
                    break
        finally:
            self.connections.discard(conn)
            if conn.session is not None and conn.session.connection is conn:
                conn.session.connection = None
            conn.queue.put_nowait(None)
            self.world.notify()
        return ws

    def _on_frame(self, conn: GatewayConnection, op: int, d: Any) -> int:
        """Handle one client frame; a non-zero result is the close code to hang up with."""
        if op == 1:
            conn.send(json.dumps({"op": 11, "d": None, "s": None, "t": None}))
            return 0
        if op == 2:
            return 4005 if conn.session is not None else self._identify(conn, d)
        if op == 6:
            return 4005 if conn.session is not None else self._resume(conn, d)
        if conn.session is None:
            return 4003
        if op == 3:
            conn.session.presences.append(d)
        elif op == 4:
            conn.session.voice_requests.append(d)
            self.on_voice_state(conn.session, d)
        elif op == 8:
            self._members_chunk(conn.session, d)
        else:
            return 4001
        self.world.notify()
        return 0

    def _identify(self, conn: GatewayConnection, d: dict[str, Any]) -> int:
        if self.token is not None and d.get("token") != self.token:
            return 4004
        if "intents" not in d:
            return 4013
        intents = int(d["intents"])
        if intents & PRIVILEGED_INTENTS & ~self.allowed_intents:
            return 4014
        session = GatewaySession(uuid.uuid4().hex, intents, d)
        session.connection, conn.session = conn, session
        w = self.world
        ready = {
            "v": 10,
            "user": {**payloads.user(w.bot), "verified": True, "mfa_enabled": False},
            "guilds": [{"id": str(g), "unavailable": True} for g in w.guilds],
            "session_id": session.id,
            "resume_gateway_url": self.resume_url,
            "session_type": "normal",
            "application": {"id": str(w.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": ["local"],
            "user_settings": {},
            "_trace": ["fakediscord"],
        }
        if "shard" in d:
            ready["shard"] = d["shard"]
        self.sessions[session.id] = session
        self.dispatch_to(session, "READY", ready)
        for g in w.guilds.values():
            full = bool(intents & GUILD_MEMBERS)
            self.dispatch_to(session, "GUILD_CREATE", payloads.guild_create(w, g, all_members=full))
        self.world.notify()
        return 0

    def _resume(self, conn: GatewayConnection, d: dict[str, Any]) -> int:
        session = self.sessions.get(str(d.get("session_id")))
        seq = d.get("seq")
        token_ok = self.token is None or d.get("token") == self.token
        oldest = session.buffer[0][0] if session and session.buffer else 1
        if session is None or session.invalidated or not token_ok or seq is None or seq < oldest - 1:
            conn.send(json.dumps({"op": 9, "d": False, "s": None, "t": None}))
            return 0
        old = session.connection
        if old is not None and old is not conn:
            self._spawn(old.close(4000))
        session.connection, conn.session = conn, session
        for s, frame in session.buffer:
            if s > seq:
                conn.send(frame)
        session.resumes += 1
        self.dispatch_to(session, "RESUMED", {"_trace": ["fakediscord"]})
        self.world.notify()
        return 0

    def _members_chunk(self, session: GatewaySession, d: dict[str, Any]) -> None:
        guild = self.world.guilds.get(int(d.get("guild_id", 0)))
        if guild is None:
            return
        members = list(guild.members.values())
        if d.get("user_ids"):
            wanted = {int(u) for u in d["user_ids"]}
            members = [m for m in members if m.user.id in wanted]
        elif d.get("query"):
            members = [m for m in members if m.user.username.lower().startswith(d["query"].lower())]
        if d.get("limit"):
            members = members[: int(d["limit"])]
        chunk: dict[str, Any] = {
            "guild_id": str(guild.id), "members": [payloads.member(m) for m in members],
            "chunk_index": 0, "chunk_count": 1, "not_found": [],
        }
        if d.get("nonce"):
            chunk["nonce"] = d["nonce"]
        self.dispatch_to(session, "GUILD_MEMBERS_CHUNK", chunk)
