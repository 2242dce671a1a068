"""Transport encryption of Discord voice packets: the two `_rtpsize` AEAD modes.

Layout (both modes): clear header (the AAD: 12 bytes + CSRCs + the 4-byte extension header
when X is set) | ciphertext of (extension body + payload) | 16-byte tag | 4-byte big-endian
counter. The nonce is that counter zero-padded on the right to 24 bytes (XChaCha20-Poly1305)
or 12 bytes (AES-256-GCM). A packet that fails authentication is reported as `None` so one
bad datagram never breaks a stream.
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt, crypto_aead_xchacha20poly1305_ietf_encrypt
from nacl.exceptions import CryptoError

from assistant.voice.rtp import NotRtpError, RtpHeader, parse_header

XCHACHA20 = "aead_xchacha20_poly1305_rtpsize"
AES256_GCM = "aead_aes256_gcm_rtpsize"
MODES = (AES256_GCM, XCHACHA20)  # preference order, as Discord lists them
TAG_SIZE = 16
COUNTER_SIZE = 4


class TransportCipher:
    """Seals and opens packets of one voice connection (one mode, one 32-byte secret key)."""

    def __init__(self, mode: str, key: bytes) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown transport mode {mode!r}; supported: {', '.join(MODES)}")
        if len(key) != 32:
            raise ValueError("the voice secret key is 32 bytes")
        self.mode, self.key = mode, bytes(key)
        self._aes = AESGCM(self.key) if mode == AES256_GCM else None

    def _nonce(self, counter: bytes) -> bytes:
        return counter + bytes((12 if self._aes else 24) - COUNTER_SIZE)

    def seal(self, header: bytes, plaintext: bytes, counter: int) -> bytes:
        """`header` is the AAD (see `rtp.build_header`); `plaintext` = extension body + payload."""
        tail = struct.pack(">I", counter & 0xFFFFFFFF)
        nonce = self._nonce(tail)
        if self._aes is not None:
            sealed = self._aes.encrypt(nonce, plaintext, header)
        else:
            sealed = crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, header, nonce, self.key)
        return header + sealed + tail

    def open(self, packet: bytes) -> tuple[RtpHeader, bytes] | None:
        """(header, payload with the extension body stripped), or None when the packet is
        malformed or fails authentication."""
        try:
            header = parse_header(packet)
        except NotRtpError:
            return None
        if len(packet) < header.aad_size + TAG_SIZE + COUNTER_SIZE:
            return None
        aad, body, tail = packet[:header.aad_size], packet[header.aad_size:-COUNTER_SIZE], packet[-COUNTER_SIZE:]
        nonce = self._nonce(tail)
        try:
            if self._aes is not None:
                plain = self._aes.decrypt(nonce, body, aad)
            else:
                plain = crypto_aead_xchacha20poly1305_ietf_decrypt(body, aad, nonce, self.key)
        except (InvalidTag, CryptoError):
            return None
        if len(plain) < header.extension_body_size:
            return None
        return header, plain[header.extension_body_size:]
