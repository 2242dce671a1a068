"""Turn audio into the datagrams a Discord client in a DAVE call sends: Opus frames,
DAVE-encrypted by the member, RTP-framed with a one-byte header extension, transport-sealed."""

from __future__ import annotations

import random

import numpy as np

from assistant.voice.opus import FRAME_SAMPLES, encode_pcm
from assistant.voice.rtp import build_header
from assistant.voice.transport import TransportCipher
from tests.davesim.member import SimMember

OPUS_SILENCE = b"\xf8\xff\xfe"
EXTENSION = b"\x10\x7f\x00\x00"  # what Discord relays: a one-byte-header extension, one word


class RtpSender:
    """One client's outgoing stream: sequence, timestamp and nonce counter carry over."""

    def __init__(self, member: SimMember | None, ssrc: int, cipher: TransportCipher, *, seed: int = 0) -> None:
        rnd = random.Random(seed)
        self.member, self.ssrc, self.cipher = member, ssrc, cipher
        self.sequence, self.timestamp, self.counter = rnd.randrange(1 << 16), rnd.randrange(1 << 32), rnd.randrange(1 << 20)

    def packet(self, opus: bytes) -> bytes:
        frame = self.member.encrypt(opus) if self.member is not None else opus
        header = build_header(self.sequence, self.timestamp, self.ssrc, extension_body=EXTENSION)
        packet = self.cipher.seal(header, EXTENSION + frame, self.counter)
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + FRAME_SAMPLES) & 0xFFFFFFFF
        self.counter += 1
        return packet

    def talk(self, pcm48k: np.ndarray) -> list[bytes]:
        """A talk spurt: the speech frames, then five silence frames, as clients end one."""
        return [self.packet(p) for p in encode_pcm(pcm48k)] + [self.packet(OPUS_SILENCE) for _ in range(5)]


def impair(packets: list[bytes], *, loss: float, reorder: float, seed: int = 1) -> list[bytes]:
    """Drop `loss` of the packets and swap `reorder` of the survivors with their neighbour."""
    rnd = random.Random(seed)
    kept = [p for p in packets if rnd.random() >= loss]
    i = 0
    while i < len(kept) - 1:
        if rnd.random() < reorder:
            kept[i], kept[i + 1] = kept[i + 1], kept[i]
            i += 1
        i += 1
    return kept


def voice_like(seconds: float, pitch: float = 140.0, rate: int = 48000, seed: int = 0) -> np.ndarray:
    """A buzzy, syllable-modulated signal the VAD takes for speech (48 kHz int16 mono)."""
    rnd = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    glottal = sum(np.sin(2 * np.pi * pitch * k * t) / k for k in range(1, 12))
    syllables = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)
    signal = 0.25 * glottal * syllables + 0.01 * rnd.standard_normal(len(t))
    return (np.clip(signal, -1, 1) * 32767).astype(np.int16)
