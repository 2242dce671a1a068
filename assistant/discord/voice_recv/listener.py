"""Reads a ListeningVoiceClient's UDP socket without blocking the event loop and drives a
`VoiceReceiver`: datagrams in, `SpeechEvent`s out to the consumer (the voice cog)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from assistant.config import VoiceConfig
from assistant.voice.e2ee import DaveReceiver
from assistant.voice.receiver import ListenSettings, SpeechEvent, VoiceReceiver
from assistant.voice.transport import TransportCipher
from assistant.discord.voice_recv.client import (
    OP_CLIENT_DISCONNECT, OP_EXECUTE_TRANSITION, OP_SESSION_DESCRIPTION, OP_SPEAKING, ListeningVoiceClient)

logger = logging.getLogger(__name__)

TICK_S = 0.02


class VoiceListener:
    """Listen to everyone in `voice_client`'s channel; `on_event` runs on the event loop."""

    def __init__(self, voice_client: ListeningVoiceClient, on_event: Callable[[SpeechEvent], None],
                 config: VoiceConfig, *, vad_model: Path | None = None) -> None:
        self.vc = voice_client
        self.dave = DaveReceiver(voice_client.dave_session)
        self.receiver = VoiceReceiver(self._cipher, self.dave, on_event,
                                      settings=ListenSettings.from_config(config, vad_model),
                                      ignore_user=voice_client.user.id)
        self._cipher_cache: tuple[Any, TransportCipher | None] = (None, None)
        self._socket: socket.socket | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _cipher(self) -> TransportCipher | None:
        mode, key = getattr(self.vc, "mode", None), getattr(self.vc, "secret_key", None)
        if not isinstance(mode, str) or not key:
            return None
        ident = (mode, bytes(key))
        if self._cipher_cache[0] != ident:
            self._cipher_cache = (ident, TransportCipher(mode, bytes(key)))
        return self._cipher_cache[1]

    def _on_ws(self, msg: dict[str, Any]) -> None:
        op, data = msg.get("op"), msg.get("d") or {}
        if op == OP_SPEAKING and "ssrc" in data and "user_id" in data:
            self.receiver.map_ssrc(int(data["ssrc"]), int(data["user_id"]))
        elif op == OP_CLIENT_DISCONNECT and "user_id" in data:
            self.receiver.forget_user(int(data["user_id"]))
        elif op in (OP_SESSION_DESCRIPTION, OP_EXECUTE_TRANSITION):
            self.dave.renew()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.vc.ws_listeners.append(self._on_ws)
        self.vc.epoch_listeners.append(self.dave.renew)
        self._attach()
        self._ticker = self._loop.create_task(self._tick_forever(), name="voice-listener-tick")
        logger.info("listening in voice channel %s", getattr(self.vc.channel, "id", "?"))

    def _attach(self) -> None:
        """(Re)register the socket: nextcord opens a new one on every reconnect."""
        sock = self.vc.socket
        if sock is self._socket or not isinstance(sock, socket.socket) or sock.fileno() < 0:
            return
        self._detach()
        assert self._loop is not None
        self._loop.add_reader(sock.fileno(), self._readable, sock)
        self._socket = sock

    def _detach(self) -> None:
        if self._socket is not None and self._loop is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self._socket.fileno())
        self._socket = None

    def _readable(self, sock: socket.socket) -> None:
        for _ in range(256):  # bounded: never starve the loop
            try:
                data = sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._detach()
                return
            self.receiver.datagram(data, time.monotonic())

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self._attach()
            self.receiver.tick(time.monotonic())

    def stop(self) -> None:
        """Stop at once: no more reads, every buffered sample dropped."""
        self._detach()
        if self._ticker is not None:
            self._ticker.cancel()
        with contextlib.suppress(ValueError):
            self.vc.ws_listeners.remove(self._on_ws)
        with contextlib.suppress(ValueError):
            self.vc.epoch_listeners.remove(self.dave.renew)
        self.receiver.stop()

    @property
    def stats(self) -> Any:
        return self.receiver.stats
