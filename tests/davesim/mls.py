"""The MLS external sender of DAVE: TLS-presentation encoding and signed Add/Remove proposals.

Discord's voice gateway is an MLS *external sender* (RFC 9420 §12.1.8.1): it announces its
public key to every member (voice op 25) and then injects Add and Remove proposals (op 27)
as PublicMessages with sender type `external`, signed with ECDSA P-256/SHA-256 over
`SignContent{"MLS 1.0 FramedContentTBS", FramedContentTBS}`. Members commit them.
"""

from __future__ import annotations

import struct

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

MLS10 = 1
WIRE_PUBLIC_MESSAGE = 1
CIPHER_SUITE_P256 = 2
SENDER_EXTERNAL = 2
CONTENT_PROPOSAL = 2
PROPOSAL_ADD = 1
PROPOSAL_REMOVE = 3
CREDENTIAL_BASIC = 1
PROPOSALS_APPEND = 0
PROPOSALS_REVOKE = 1


def varint(n: int) -> bytes:
    """MLS variable-length integer (RFC 9000 style, at most 30 bits)."""
    if n < 1 << 6:
        return bytes([n])
    if n < 1 << 14:
        return struct.pack(">H", n | 0x4000)
    if n < 1 << 30:
        return struct.pack(">I", n | 0x80000000)
    raise ValueError("MLS vectors are shorter than 2**30 bytes")


def vec(data: bytes) -> bytes:
    return varint(len(data)) + data


def read_varint(data: bytes, offset: int) -> tuple[int, int]:
    """(value, offset after it)."""
    prefix = data[offset] >> 6
    if prefix == 0:
        return data[offset], offset + 1
    if prefix == 1:
        return struct.unpack_from(">H", data, offset)[0] & 0x3FFF, offset + 2
    if prefix == 2:
        return struct.unpack_from(">I", data, offset)[0] & 0x3FFFFFFF, offset + 4
    raise ValueError("invalid MLS varint prefix")


def read_vec(data: bytes, offset: int) -> tuple[bytes, int]:
    length, offset = read_varint(data, offset)
    if offset + length > len(data):
        raise ValueError("MLS vector runs past the end of the data")
    return data[offset:offset + length], offset + length


def group_id_for(channel_id: int) -> bytes:
    """DAVE's MLS group id: the voice channel id as 8 big-endian bytes."""
    return struct.pack(">Q", channel_id)


class ExternalSender:
    """The gateway's signing identity; one per voice server (or per test)."""

    def __init__(self, identity: bytes = b"davesim") -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.identity = identity
        self.public_key = self._key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)

    def package(self) -> bytes:
        """The op 25 payload: ExternalSender{signature_key<V>, Credential basic{identity<V>}}."""
        return vec(self.public_key) + struct.pack(">H", CREDENTIAL_BASIC) + vec(self.identity)

    def _sign_with_label(self, label: bytes, content: bytes) -> bytes:
        sign_content = vec(b"MLS 1.0 " + label) + vec(content)
        return self._key.sign(sign_content, ec.ECDSA(hashes.SHA256()))  # DER, as MLS expects

    def _public_message(self, group_id: bytes, epoch: int, proposal: bytes) -> bytes:
        content = (vec(group_id) + struct.pack(">Q", epoch) + struct.pack(">BI", SENDER_EXTERNAL, 0)
                   + vec(b"") + bytes([CONTENT_PROPOSAL]) + proposal)
        framing = struct.pack(">HH", MLS10, WIRE_PUBLIC_MESSAGE)
        signature = self._sign_with_label(b"FramedContentTBS", framing + content)
        return framing + content + vec(signature)  # no membership tag for external senders

    def add(self, group_id: bytes, epoch: int, key_package: bytes) -> bytes:
        """One MLSMessage carrying Add{key_package} (the key package as a member sent it, op 26)."""
        return self._public_message(group_id, epoch, struct.pack(">H", PROPOSAL_ADD) + key_package)

    def remove(self, group_id: bytes, epoch: int, leaf_index: int) -> bytes:
        return self._public_message(group_id, epoch, struct.pack(">HI", PROPOSAL_REMOVE, leaf_index))


def proposals_payload(messages: list[bytes]) -> bytes:
    """The op 27 payload: operation type `append`, then the proposal MLSMessages as a vector."""
    return bytes([PROPOSALS_APPEND]) + vec(b"".join(messages))


def split_commit_welcome(data: bytes) -> tuple[bytes, bytes | None]:
    """Split an op 28 payload: the commit MLSMessage, then an optional bare Welcome.

    Parsing a Commit fully needs most of MLS; instead find the first offset from which the
    rest parses exactly as a Welcome (cipher suite, secrets<V>, encrypted_group_info<V>).
    The Welcome carries no MLSMessage framing here, and that is what op 30 relays.
    """
    marker = struct.pack(">H", CIPHER_SUITE_P256)
    start = data.find(marker, 4)
    while start != -1:
        try:
            _, offset = read_vec(data, start + 2)  # EncryptedGroupSecrets secrets<V>
            _, offset = read_vec(data, offset)  # encrypted_group_info<V>
            if offset == len(data):
                return data[:start], data[start:]
        except (ValueError, IndexError, struct.error):
            pass
        start = data.find(marker, start + 1)
    return data, None
