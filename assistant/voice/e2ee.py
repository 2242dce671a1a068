"""DAVE end-to-end decryption of received audio, one `dave.Decryptor` per speaker.

The MLS session belongs to whoever runs the voice connection (nextcord's `E2EEState`
creates it to *send*); we only read key ratchets from it. Each speaker's decryptor must
move to the new epoch's ratchet right after every commit or welcome — waiting for the next
packet loses frames when two membership changes come back to back — so the owner of the
session calls `renew()` then. A speaker with no ratchet yet (not in the group, or the call
runs DAVE protocol 0) is passed through, so unencrypted frames still play.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import dave

logger = logging.getLogger(__name__)

DAVE_MAGIC = b"\xfa\xfa"  # every DAVE-protected frame ends with this marker
OPUS_SILENCE = b"\xf8\xff\xfe"  # may arrive unprotected after a talk spurt; harmless to accept


class DaveReceiver:
    """Per-speaker decryptors bound to an MLS session that someone else drives.

    `session` returns the current `dave.Session` or None (no DAVE on this call).
    """

    def __init__(self, session: Callable[[], Any]) -> None:
        self._session = session
        self._decryptors: dict[int, dave.Decryptor] = {}
        self.failed = 0
        self.passed_through = 0

    def _ratchet(self, user_id: int) -> Any:
        session = self._session()
        if session is None or not session.has_established_group():
            return None
        return session.get_key_ratchet(str(user_id))

    def _bind(self, user_id: int, decryptor: dave.Decryptor) -> None:
        ratchet = self._ratchet(user_id)
        if ratchet is not None:
            decryptor.transition_to_key_ratchet(ratchet)
            decryptor.transition_to_passthrough_mode(False)
        else:
            decryptor.transition_to_passthrough_mode(True)

    def renew(self) -> None:
        """The epoch changed (commit, welcome, protocol downgrade): follow it for every speaker."""
        for user_id, decryptor in self._decryptors.items():
            self._bind(user_id, decryptor)

    def forget(self, user_id: int) -> None:
        self._decryptors.pop(user_id, None)

    def decrypt(self, user_id: int, frame: bytes) -> bytes | None:
        """The Opus frame inside `frame`, or None when it cannot be decrypted (counted)."""
        decryptor = self._decryptors.get(user_id)
        if decryptor is None:
            decryptor = self._decryptors[user_id] = dave.Decryptor()
            self._bind(user_id, decryptor)
        if not frame.endswith(DAVE_MAGIC) and self._ratchet(user_id) is None:
            self.passed_through += 1
            return frame
        plain = decryptor.decrypt(dave.MediaType.audio, frame)
        if plain is None:
            if frame == OPUS_SILENCE:
                return frame
            self.failed += 1
        return plain

    @property
    def speakers(self) -> list[int]:
        return list(self._decryptors)
