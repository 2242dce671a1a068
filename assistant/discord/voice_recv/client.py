"""A nextcord VoiceClient that can listen: both transport modes, the voice websocket's
SPEAKING / CLIENT_DISCONNECT messages, and DAVE epoch changes, forwarded to a receiver.

nextcord 3.2 sends only: it offers only XChaCha20, ignores op 5, and keeps DAVE key
ratchets for itself. We keep its MLS session (it is the one Discord's gateway talks to)
and read every other member's ratchet from it right after each commit or welcome.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

import nextcord
from nextcord.gateway import DiscordVoiceWebSocket
from nextcord.voice_client import E2EEState

from assistant.voice.transport import AES256_GCM, XCHACHA20, TransportCipher

logger = logging.getLogger(__name__)

OP_SESSION_DESCRIPTION = 4
OP_SPEAKING = 5
OP_CLIENT_DISCONNECT = 13
OP_EXECUTE_TRANSITION = 22


class ListeningE2EEState(E2EEState):
    """nextcord's DAVE state, telling the receiver when the epoch changes and guarding the
    sender's key hand-over against the audio player thread."""

    voice_client: ListeningVoiceClient

    async def mls_announce_commit_transition(self, transition_id: int, data: bytes) -> None:
        await super().mls_announce_commit_transition(transition_id, data)
        self.voice_client.epoch_changed()

    async def mls_welcome(self, transition_id: int, data: bytes) -> None:
        await super().mls_welcome(transition_id, data)
        self.voice_client.epoch_changed()

    def execute_transition(self, transition_id: int) -> None:
        with self.voice_client.encrypt_lock:
            super().execute_transition(transition_id)
        self.voice_client.epoch_changed()

    @property
    def session(self) -> Any:
        return self._session


class ListeningVoiceClient(nextcord.VoiceClient):
    """Use as `channel.connect(cls=ListeningVoiceClient)`; then attach a `VoiceListener`."""

    supported_modes = (AES256_GCM, XCHACHA20)  # type: ignore[assignment]  # Discord's preference order

    def __init__(self, client: nextcord.Client, channel: Any) -> None:
        super().__init__(client, channel)
        self.encrypt_lock = threading.Lock()
        if self.e2ee_state is not None:
            self.e2ee_state = ListeningE2EEState(self)
        self.ws_listeners: list[Callable[[dict[str, Any]], None]] = []
        self.epoch_listeners: list[Callable[[], None]] = []

    # -- receive-side hooks --------------------------------------------------------------
    async def connect_websocket(self) -> None:
        # nextcord's own, plus the hook that lets us see op 5 / op 13 (it drops them)
        self.ws = await DiscordVoiceWebSocket.from_client(self, hook=self._ws_hook)
        self._connected.clear()
        while self.ws.secret_key is None:
            await self.ws.poll_event()
        self._connected.set()

    async def _ws_hook(self, ws: DiscordVoiceWebSocket, msg: dict[str, Any]) -> None:
        for listener in list(self.ws_listeners):
            try:
                listener(msg)
            except Exception:
                logger.exception("voice websocket listener failed on op %s", msg.get("op"))

    def epoch_changed(self) -> None:
        for listener in list(self.epoch_listeners):
            try:
                listener()
            except Exception:
                logger.exception("DAVE epoch listener failed")

    def dave_session(self) -> Any:
        """nextcord's `dave.Session`, or None when the call has no DAVE state."""
        state = self.e2ee_state
        return state.session if isinstance(state, ListeningE2EEState) else None

    async def wait_until_can_encrypt(self, timeout: float = 5.0) -> bool:
        """Under DAVE, frames played before the key arrives go out unencrypted and are dropped
        by other clients: wait for the key first. True at once when the call has no DAVE."""
        state = self.e2ee_state
        session = self.dave_session()
        if state is None or session is None:
            return True
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            if state.can_encrypt() or session.get_protocol_version() == 0:
                return True
            await asyncio.sleep(0.02)
        return False

    # -- send side -----------------------------------------------------------------------
    def _get_voice_packet(self, data: Any) -> bytes:
        with self.encrypt_lock:  # the event loop may be swapping the DAVE key right now
            return super()._get_voice_packet(data)

    def _encrypt_aead_aes256_gcm_rtpsize(self, header: bytes, data: Any) -> bytes:
        """nextcord seals only XChaCha20; AES-256-GCM goes through the core's `TransportCipher`, so
        the wire layout (4-byte counter as nonce prefix and as trailer) is written down once.
        The counter advances before sealing and wraps after 2**32 - 1, as nextcord's own does."""
        counter = self._incr_nonce
        self.checked_add("_incr_nonce", 1, 4294967295)
        return TransportCipher(AES256_GCM, bytes(self.secret_key)).seal(bytes(header), bytes(data), counter)
