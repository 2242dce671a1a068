"""A simulated call participant with real DAVE state (`dave.Session`, `Encryptor`, `Decryptor`).

It reacts to the same messages nextcord's `E2EEState` does and returns what it would send
back, so tests can wire members to a `DaveGroup` in memory or over a real voice websocket.
"""

from __future__ import annotations

import logging
from typing import Any

import dave

logger = logging.getLogger(__name__)

OP_KEY_PACKAGE = 26
OP_COMMIT_WELCOME = 28
OP_TRANSITION_READY = 23


class SimMember:
    def __init__(self, user_id: int, channel_id: int, ssrc: int) -> None:
        self.user_id, self.channel_id, self.ssrc = user_id, channel_id, ssrc
        self.failures: list[tuple[str, str]] = []
        self.session = dave.Session(lambda source, reason: self.failures.append((source, reason)))
        self.encryptor = dave.Encryptor()
        self.encryptor.assign_ssrc_to_codec(ssrc, dave.Codec.opus)
        self.decryptors: dict[int, dave.Decryptor] = {}
        self.recognised: set[str] = {str(user_id)}
        self.transitions: list[int] = []

    def start(self) -> tuple[int, bytes]:
        """Op 4 arrived with DAVE version 1: create the local group state, send a key package."""
        self.session.init(version=1, group_id=self.channel_id, self_user_id=str(self.user_id), transient_key=None)
        return OP_KEY_PACKAGE, self.session.get_marshalled_key_package()

    def recognise(self, *user_ids: int) -> None:
        self.recognised.update(str(u) for u in user_ids)

    def on_binary(self, op: int, payload: bytes, transition_id: int | None = None) -> list[tuple[int, Any]]:
        """Handle op 25/27/29/30; returns replies as (opcode, bytes or JSON dict)."""
        if op == 25:
            self.session.set_external_sender(payload)
            return []
        if op == 27:
            commit_welcome = self.session.process_proposals(payload, self.recognised)
            return [] if commit_welcome is None else [(OP_COMMIT_WELCOME, commit_welcome)]
        if op == 29:
            result = self.session.process_commit(payload)
            if isinstance(result, dave.RejectType):
                self.failures.append(("commit", str(result)))
                return []
        elif op == 30:
            if self.session.process_welcome(payload, self.recognised) is None:
                self.failures.append(("welcome", "rejected"))
                return []
        else:
            raise ValueError(f"unexpected DAVE opcode {op}")
        self.renew_decryptors()  # the epoch changed: follow it before any frame of it arrives
        assert transition_id is not None
        return [(OP_TRANSITION_READY, {"transition_id": transition_id})]

    def execute_transition(self, transition_id: int) -> None:
        self.transitions.append(transition_id)
        self.encryptor.set_key_ratchet(self.session.get_key_ratchet(str(self.user_id)))

    def renew_decryptors(self) -> None:
        for user_id, decryptor in self.decryptors.items():
            ratchet = self.session.get_key_ratchet(str(user_id))
            if ratchet is not None:
                decryptor.transition_to_key_ratchet(ratchet)

    def encrypt(self, frame: bytes) -> bytes:
        """DAVE-encrypt one Opus frame (before transport encryption), as a client sends it."""
        sealed = self.encryptor.encrypt(dave.MediaType.audio, self.ssrc, frame)
        if sealed is None:
            raise RuntimeError("DAVE encryption failed")
        return sealed

    def decrypt(self, sender_id: int, frame: bytes) -> bytes | None:
        decryptor = self.decryptors.get(sender_id)
        if decryptor is None:
            decryptor = self.decryptors[sender_id] = dave.Decryptor()
            ratchet = self.session.get_key_ratchet(str(sender_id))
            if ratchet is not None:
                decryptor.transition_to_key_ratchet(ratchet)
        return decryptor.decrypt(dave.MediaType.audio, frame)

    @property
    def can_encrypt(self) -> bool:
        return self.encryptor.has_key_ratchet()
