"""``FakeDiscord``: REST + gateway on one HTTP port, the voice gateway on a TLS
port and a UDP voice socket, all on 127.0.0.1 with ephemeral ports.

By default starting the server points nextcord at it (``Route.BASE``) and makes
in-process aiohttp trust its certificate; stopping it restores ``Route.BASE``.
A bot in a subprocess gets the same through :meth:`FakeDiscord.client_env`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import numpy as np
from aiohttp import web

from . import rest, rest_interactions, rest_messages
from .chat import ChatControls
from .gateway import Gateway, GatewaySession
from .models import User, VoiceState
from .ratelimit import Injection, RateLimiter
from .rest import RequestRecord, RestApi, Router
from .state import ChannelRef, UserRef, World
from .tls import TlsMaterial, tls_material, trust_in_process
from .voice import Impairment, VoiceConnection, VoiceGateway
from .voice_rtp import VoiceCapture, VoiceUdp, udp_socket

log = logging.getLogger("fakediscord")


class FakeDiscord(ChatControls):
    """A local Discord for one bot.  Use as ``async with FakeDiscord() as discord:``."""

    def __init__(
        self,
        *,
        token: str | None = None,
        configure_nextcord: bool = True,
        enforce_rate_limits: bool = True,
        heartbeat_interval_ms: int = 41250,
        bot_name: str = "Assistant",
    ) -> None:
        self.world = World(bot_name=bot_name)
        self.rate_limits = RateLimiter()
        self.rate_limits.enforce = enforce_rate_limits
        self.token = token
        self.rest = RestApi(
            self.world, self.rate_limits,
            Router(rest.routes, rest_messages.routes, rest_interactions.routes), token,
        )
        self.gateway = Gateway(self.world, token=token, heartbeat_interval_ms=heartbeat_interval_ms)
        self.world.dispatch = self.gateway.dispatch
        self.gateway.on_voice_state = self._on_bot_voice_state
        self.udp = VoiceUdp(self.world.notify)
        self.voice = VoiceGateway(self.world, self.udp)
        self.tls: TlsMaterial = tls_material()
        self.configure_nextcord = configure_nextcord
        self.base_url = self.api_base = self.gateway_url = self.voice_endpoint = ""
        self._runners: list[web.AppRunner] = []
        self._udp_transport: asyncio.DatagramTransport | None = None
        self._saved_route_base: str | None = None

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> FakeDiscord:
        http = web.Application()
        http.router.add_route("GET", "/ws", self.gateway.handle)
        http.router.add_route("GET", "/ws-resume", self.gateway.handle)
        http.router.add_route("GET", "/attachments/{channel_id}/{attachment_id}/{filename}", self.rest.cdn)
        http.router.add_route("*", "/api/{tail:.*}", self.rest.handle)
        http.router.add_route("*", "/{tail:.*}", self.rest.not_found)
        port = await self._serve(http, None)
        self.base_url = f"http://127.0.0.1:{port}"
        self.api_base = f"{self.base_url}/api/v10"
        self.gateway_url = self.rest.gateway_url = f"ws://127.0.0.1:{port}/ws"
        self.gateway.resume_url = f"ws://127.0.0.1:{port}/ws-resume"
        self.world.base_url = self.base_url

        voice_app = web.Application()
        voice_app.router.add_route("GET", "/", self.voice.handle)
        voice_port = await self._serve(voice_app, self.tls.server_context())
        self.voice_endpoint = self.voice.endpoint = f"127.0.0.1:{voice_port}"

        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self.udp, sock=udp_socket())
        self._udp_transport = transport
        self.voice.udp_port = transport.get_extra_info("sockname")[1]

        if self.configure_nextcord:
            import nextcord.http

            self._saved_route_base = nextcord.http.Route.BASE
            nextcord.http.Route.BASE = self.api_base
            trust_in_process(self.tls)
        return self

    async def _serve(self, app: web.Application, ssl_context: Any) -> int:
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        return int(runner.addresses[-1][1])

    async def stop(self) -> None:
        await self.voice.close()
        await self.gateway.close()
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        if self._udp_transport is not None:
            self._udp_transport.close()
            self._udp_transport = None
        if self._saved_route_base is not None:
            import nextcord.http

            nextcord.http.Route.BASE = self._saved_route_base
            self._saved_route_base = None
        if self.rest.unknown_routes:
            log.warning("fakediscord: the bot called unknown routes: %s", self.rest.unknown_routes)

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    def client_env(self) -> dict[str, str]:
        """Environment for a bot in a subprocess: trust our CA (plus certifi's roots)
        and learn where the API is (the bot must set ``Route.BASE`` from it)."""
        return {"SSL_CERT_FILE": str(self.tls.bundle_file), "FAKEDISCORD_API_BASE": self.api_base}

    @contextlib.asynccontextmanager
    async def run_client(self, client: Any, token: str = "fakediscord-token", *,
                         ready_timeout: float = 15.0) -> AsyncIterator[Any]:
        """Run a nextcord ``Client``/``Bot`` until the block ends; waits for on_ready.

        Tip: pass ``guild_ready_timeout=0.05`` to the client; nextcord otherwise
        waits 2 s for more GUILD_CREATEs before on_ready."""
        runner = asyncio.create_task(client.start(token), name="fakediscord-bot")
        ready = asyncio.create_task(client.wait_until_ready())
        try:
            done, _ = await asyncio.wait({runner, ready}, timeout=ready_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if runner in done:
                runner.result()  # raises the login/connect error
                raise RuntimeError("the client stopped before it was ready")
            if ready not in done:
                raise TimeoutError(f"the client was not ready within {ready_timeout}s")
            yield client
        finally:
            ready.cancel()
            await client.close()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(runner, 5.0)

    # -- observation ------------------------------------------------------------------------
    def requests(self, route: str | None = None) -> list[RequestRecord]:
        """REST calls seen; ``route`` filters on ``"METHOD /template"`` or the template."""
        found = self.rest.requests
        if route is not None:
            found = [r for r in found if route in (r.route, f"{r.method} {r.route}")]
        return list(found)

    @property
    def unknown_routes(self) -> list[str]:
        """``"METHOD /path"`` of every request no route matched (answered 404)."""
        return list(self.rest.unknown_routes)

    @property
    def server_errors(self) -> list[str]:
        """Crashes of fakediscord's own handlers (answered 501): always a bug here."""
        return list(self.rest.errors)

    async def wait_until(self, predicate: Any, *, timeout: float = 10.0, what: str = "condition") -> Any:
        return await self.world.wait_until(predicate, timeout, what)

    # -- rate limits ------------------------------------------------------------------------
    def inject_429(self, route: str, count: int = 1, retry_after: float = 0.3, *,
                   is_global: bool = False) -> Injection:
        """Answer the next ``count`` matching requests with 429.  ``route`` is
        ``"POST /channels/{channel_id}/messages"`` (template) or a glob on the path
        such as ``"PATCH /channels/*/messages/*"``; the method part is optional."""
        return self.rate_limits.inject(route, count, retry_after, is_global)

    # -- gateway ----------------------------------------------------------------------------
    @property
    def sessions(self) -> list[GatewaySession]:
        return list(self.gateway.sessions.values())

    async def wait_for_identify(self, *, timeout: float = 10.0) -> GatewaySession:
        return await self.world.wait_until(
            lambda: next(iter(self.gateway.live_sessions()), None), timeout, "the bot to IDENTIFY")

    def drop_gateway(self, code: int | None = 4000) -> int:
        """Close the bot's gateway socket(s) with a resumable ``code`` (None: abort the
        TCP connection).  Dispatches made meanwhile are replayed on RESUME."""
        return self.gateway.drop(code)

    def request_reconnect(self) -> None:
        """Send op 7 RECONNECT, as Discord does before moving a session."""
        self.gateway.send_op(7, None)

    def invalidate_session(self, *, resumable: bool = False) -> None:
        self.gateway.invalidate(resumable=resumable)

    async def wait_for_resume(self, count: int = 1, *, timeout: float = 10.0) -> GatewaySession:
        return await self.world.wait_until(
            lambda: next((s for s in self.gateway.live_sessions()
                          if s.resumes >= count and s.connection is not None), None),
            timeout, "the bot to RESUME")

    # -- voice ------------------------------------------------------------------------------
    def _on_bot_voice_state(self, session: GatewaySession, d: dict[str, Any]) -> None:
        channel_id = int(d["channel_id"]) if d.get("channel_id") else None
        self.world.set_voice_state(self.world.bot, channel_id, session.id,
                                   self_mute=bool(d.get("self_mute")), self_deaf=bool(d.get("self_deaf")))
        if channel_id is not None:
            grant = self.voice.grant(self.world.bot.id, int(d["guild_id"]), channel_id, session.id)
            self.gateway.dispatch_to(session, "VOICE_SERVER_UPDATE", {
                "token": grant.token, "guild_id": str(grant.guild_id), "endpoint": self.voice_endpoint,
            })

    def join_voice(self, user: UserRef, channel: ChannelRef | None = None) -> VoiceState:
        """A person joins a voice channel (VOICE_STATE_UPDATE, op 11 to the bot's call)."""
        channel_ref = channel if channel is not None else self.world.voice
        vs = self.world.set_voice_state(user, channel_ref, secrets.token_hex(16))
        conn = self.voice.active()
        if conn is not None and conn.grant.channel_id == vs.channel_id:
            asyncio.get_running_loop().create_task(conn.send(11, {"user_ids": [str(vs.user_id)]}))
        return vs

    def leave_voice(self, user: UserRef) -> VoiceState:
        u = self.world.find_user(user)
        old = self.world.guild.voice_states.get(u.id)
        vs = self.world.set_voice_state(u, None, old.session_id if old else "")
        conn = self.voice.active()
        if conn is not None and old is not None and conn.grant.channel_id == old.channel_id:
            asyncio.get_running_loop().create_task(conn.send(13, {"user_id": str(u.id)}))
        return vs

    async def join_dave(self, user: UserRef) -> Any:
        """``user`` (already in the voice channel) joins the call's DAVE group as a simulated
        member; needs ``voice.dave_protocol_version = 1``. Returns the `SimMember`."""
        return await self.voice.dave_join(self.world.find_user(user).id)

    async def kick_from_voice(self, user: UserRef | None = None) -> None:
        """Disconnect someone (default: the bot) like a moderator would."""
        u = self.world.find_user(user if user is not None else self.world.bot)
        self.world.set_voice_state(u, None, "")
        await self.voice.kick(u.id)

    async def wait_for_bot_voice(self, *, timeout: float = 10.0) -> VoiceConnection:
        """Until the bot's voice session has its key and finished IP discovery."""
        return await self.world.wait_until(
            lambda: c if (c := self.voice.active()) is not None and c.peer.address else None,
            timeout, "the bot to connect to voice")

    def voice_audio(self, who: UserRef | int | None = None) -> VoiceCapture:
        """Audio received from the bot (default), a user, or an SSRC; latest session."""
        captures = self.udp.captures
        if isinstance(who, int) and who in captures:
            return captures[who]
        uid = self.world.find_user(who if who is not None else self.world.bot).id
        mine = [c for c in captures.values() if c.user_id == uid]
        if not mine:
            raise KeyError(f"no audio received from user {uid}")
        return mine[-1]

    async def wait_for_voice_audio(self, who: UserRef | None = None, *, min_seconds: float = 0.02,
                                   quiet: float = 0.3, timeout: float = 15.0) -> VoiceCapture:
        """Until at least ``min_seconds`` of non-silent audio arrived and then nothing
        for ``quiet`` seconds (the bot finished speaking)."""
        def check() -> VoiceCapture | None:
            try:
                cap = self.voice_audio(who)
            except KeyError:
                return None
            last = cap.packets[-1].at if cap.packets else 0.0
            if cap.seconds >= min_seconds and time.monotonic() - last >= quiet:
                return cap
            return None

        return await self.world.wait_until(check, timeout, "audio from the bot")

    def speak(self, user: UserRef, pcm: np.ndarray, *, realtime: bool = True,
              impairment: Impairment | None = None) -> asyncio.Task[None]:
        """``user`` talks in the bot's voice channel: 48 kHz int16 PCM is Opus-encoded,
        encrypted with the bot's key and sent to its UDP socket, as Discord relays it.
        ``impairment`` drops and reorders packets; ``self.voice.spoken[-1]`` records when
        the first packet went out."""
        return self.voice.speak(self.world.find_user(user).id, pcm, realtime=realtime, impairment=impairment)


__all__ = ["FakeDiscord", "User"]
