"""Voice UDP: IP discovery, RTP transport encryption and Opus (de)coding.

Transport modes ``aead_xchacha20_poly1305_rtpsize`` and ``aead_aes256_gcm_rtpsize``:
the RTP header (+ CSRCs + the 4-byte extension header when X is set) is the AAD; the
extension *body* and the Opus payload are encrypted; the 16-byte tag follows; the
last 4 bytes are the big-endian nonce counter, zero-padded to 24 bytes (XChaCha20)
or 12 bytes (AES-GCM).  Opus is decoded with PyAV's
bundled libopus into stereo buffers, because nextcord's own ``Decoder`` aborts
the process on mono packets.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)

log = logging.getLogger("fakediscord")

SAMPLE_RATE = 48000
FRAME_SAMPLES = 960  # 20 ms
OPUS_SILENCE = b"\xf8\xff\xfe"
RTP_PAYLOAD_TYPE = 0x78
XCHACHA20 = "aead_xchacha20_poly1305_rtpsize"
AES256_GCM = "aead_aes256_gcm_rtpsize"


def _aead(mode: str, key: bytes, counter: bytes, data: bytes, aad: bytes, *, seal: bool) -> bytes:
    if mode == AES256_GCM:
        gcm = AESGCM(key)
        nonce = counter + bytes(8)
        return gcm.encrypt(nonce, data, aad) if seal else gcm.decrypt(nonce, data, aad)
    if mode != XCHACHA20:
        raise ValueError(f"unknown transport mode {mode!r}")
    nonce = counter + bytes(20)
    if seal:
        return crypto_aead_xchacha20poly1305_ietf_encrypt(data, aad, nonce, key)  # type: ignore[no-any-return]
    return crypto_aead_xchacha20poly1305_ietf_decrypt(data, aad, nonce, key)  # type: ignore[no-any-return]


def open_rtp(packet: bytes, key: bytes, mode: str = XCHACHA20) -> tuple[int, int, int, bytes]:
    """Decrypt one rtpsize packet: ``(sequence, timestamp, ssrc, opus)``."""
    csrc_count = packet[0] & 0x0F
    header_len = 12 + 4 * csrc_count
    ext_words = 0
    if packet[0] & 0x10:
        ext_words = struct.unpack_from(">H", packet, header_len + 2)[0]
        header_len += 4
    plain = _aead(mode, key, packet[-4:], packet[header_len:-4], packet[:header_len], seal=False)
    sequence, timestamp, ssrc = struct.unpack_from(">HII", packet, 2)
    return sequence, timestamp, ssrc, plain[ext_words * 4 :]


def seal_rtp(
    sequence: int, timestamp: int, ssrc: int, opus: bytes, key: bytes, counter: int,
    extension: bytes = b"\x10\x7f\x00\x00", mode: str = XCHACHA20,
) -> bytes:
    """Build a packet the way Discord relays other users' audio: with a one-byte
    header extension (X bit), whose body is encrypted along with the payload."""
    first = 0x90 if extension else 0x80
    header = struct.pack(">BBHII", first, RTP_PAYLOAD_TYPE, sequence, timestamp, ssrc)
    if extension:
        header += struct.pack(">HH", 0xBEDE, len(extension) // 4)
    nonce_tail = struct.pack(">I", counter)
    sealed = _aead(mode, key, nonce_tail, extension + opus, header, seal=True)
    return header + sealed + nonce_tail


def discovery_response(request: bytes, addr: tuple[str, int]) -> bytes:
    ssrc = struct.unpack_from(">I", request, 4)[0]
    ip = addr[0].encode()[:63].ljust(64, b"\x00")
    return struct.pack(">HHI", 2, 70, ssrc) + ip + struct.pack(">H", addr[1])


@dataclass
class VoicePacket:
    at: float
    sequence: int
    timestamp: int
    opus: bytes = field(repr=False)
    pcm: np.ndarray = field(repr=False)

    @property
    def silence(self) -> bool:
        return self.opus == OPUS_SILENCE


class VoiceCapture:
    """Everything one SSRC sent us, decoded; times are ``time.monotonic()``."""

    def __init__(self, ssrc: int, user_id: int) -> None:
        self.ssrc, self.user_id = ssrc, user_id
        self.packets: list[VoicePacket] = []
        self.decode_errors = 0
        self._decoder: Any = av.CodecContext.create("libopus", "r")
        self._decoder.sample_rate = SAMPLE_RATE
        self._decoder.layout = "stereo"

    def add(self, at: float, sequence: int, timestamp: int, opus: bytes) -> None:
        try:
            frames = self._decoder.decode(av.Packet(opus))
            pcm = np.concatenate([f.to_ndarray().reshape(-1, 2) for f in frames])
        except (av.FFmpegError, ValueError):
            self.decode_errors += 1
            pcm = np.zeros((FRAME_SAMPLES, 2), np.int16)
        self.packets.append(VoicePacket(at, sequence, timestamp, opus, pcm.astype(np.int16)))

    def speech(self) -> list[VoicePacket]:
        return [p for p in self.packets if not p.silence]

    def pcm(self, *, include_silence: bool = False) -> np.ndarray:
        """48 kHz stereo int16, shape ``(samples, 2)``, in RTP sequence order."""
        packets = self.packets if include_silence else self.speech()
        if not packets:
            return np.zeros((0, 2), np.int16)
        return np.concatenate([p.pcm for p in packets])

    def mono(self) -> np.ndarray:
        """Float mono in [-1, 1], handy for FFTs and speech-to-text."""
        return self.pcm().astype(np.float32).mean(axis=1) / 32768.0

    @property
    def seconds(self) -> float:
        return len(self.pcm()) / SAMPLE_RATE

    @property
    def first_packet_at(self) -> float | None:
        speech = self.speech()
        return speech[0].at if speech else None

    @property
    def last_packet_at(self) -> float | None:
        speech = self.speech()
        return speech[-1].at if speech else None


@dataclass
class UdpPeer:
    """What the UDP side needs to know about one voice connection."""

    ssrc: int
    user_id: int
    secret_key: bytes | None = None
    mode: str = XCHACHA20
    address: tuple[str, int] | None = None


class VoiceUdp(asyncio.DatagramProtocol):
    def __init__(self, on_change: Callable[[], None]) -> None:
        self.on_change = on_change
        self.peers: dict[int, UdpPeer] = {}
        self.captures: dict[int, VoiceCapture] = {}
        self.decrypt_errors = 0
        self.dave_errors = 0
        self.unknown_packets = 0
        # DAVE calls: (sender's user id, frame) → Opus, or None when it does not decrypt
        self.dave_open: Callable[[int, bytes], bytes | None] | None = None
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.DatagramTransport)
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) == 74 and data[:4] == b"\x00\x01\x00\x46":
            ssrc = struct.unpack_from(">I", data, 4)[0]
            if ssrc in self.peers:
                self.peers[ssrc].address = addr
            assert self.transport is not None
            self.transport.sendto(discovery_response(data, addr), addr)
            return
        if len(data) < 12 + 16 + 4 or data[0] >> 6 != 2 or 200 <= data[1] <= 204:
            self.unknown_packets += 1  # too short, not RTP, or RTCP
            return
        ssrc = struct.unpack_from(">I", data, 8)[0]
        peer = self.peers.get(ssrc)
        if peer is None or peer.secret_key is None:
            self.unknown_packets += 1
            return
        try:
            sequence, timestamp, _, opus = open_rtp(data, peer.secret_key, peer.mode)
        except Exception:  # nacl raises CryptoError on a bad tag
            self.decrypt_errors += 1
            log.error("fakediscord: could not decrypt RTP from ssrc %s", ssrc)
            return
        if self.dave_open is not None and opus != OPUS_SILENCE:
            frame = self.dave_open(peer.user_id, opus)
            if frame is None:
                self.dave_errors += 1
                return
            opus = frame
        capture = self.captures.get(ssrc)
        if capture is None:
            capture = self.captures[ssrc] = VoiceCapture(ssrc, peer.user_id)
        capture.add(time.monotonic(), sequence, timestamp, opus)
        self.on_change()

    def send(self, packet: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None:
            self.transport.sendto(packet, addr)


def encode_opus(pcm: np.ndarray) -> list[bytes]:
    """48 kHz int16 PCM (mono ``(n,)`` or stereo ``(n, 2)``) to 20 ms Opus packets."""
    stereo = pcm if pcm.ndim == 2 else np.repeat(pcm[:, None], 2, axis=1)
    stereo = np.ascontiguousarray(stereo, dtype=np.int16)
    pad = (-len(stereo)) % FRAME_SAMPLES
    stereo = np.concatenate([stereo, np.zeros((pad, 2), np.int16)])
    encoder: Any = av.CodecContext.create("libopus", "w")
    encoder.sample_rate = SAMPLE_RATE
    encoder.layout = "stereo"
    encoder.format = "s16"
    encoder.bit_rate = 64000
    packets: list[bytes] = []
    for start in range(0, len(stereo), FRAME_SAMPLES):
        frame = av.AudioFrame.from_ndarray(
            stereo[start : start + FRAME_SAMPLES].reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate = SAMPLE_RATE
        frame.pts = start
        packets.extend(bytes(p) for p in encoder.encode(frame))
    packets.extend(bytes(p) for p in encoder.encode(None))
    return packets


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock
