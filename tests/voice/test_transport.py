"""RTP parsing and both transport modes, cross-checked against independent implementations."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from assistant.voice.rtp import build_header, is_audio_rtp, is_ip_discovery, is_rtcp, parse_header
from assistant.voice.transport import AES256_GCM, MODES, XCHACHA20, TransportCipher
from tests.fakediscord.voice_rtp import seal_rtp

KEY = bytes(range(32))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ext", [b"", b"\x10\x7f\x00\x00", bytes(12)])
def test_round_trip_strips_exactly_the_extension_body(mode: str, ext: bytes) -> None:
    cipher = TransportCipher(mode, KEY)
    payload = b"\xfc\x01\x02opus-frame"
    packet = cipher.seal(build_header(7, 960, 1234, extension_body=ext), ext + payload, counter=5)
    opened = cipher.open(packet)
    assert opened is not None
    header, plain = opened
    assert plain == payload
    assert (header.sequence, header.timestamp, header.ssrc) == (7, 960, 1234)
    assert header.has_extension == bool(ext) and header.extension_body_size == len(ext)
    assert packet[-4:] == struct.pack(">I", 5)


def test_xchacha_matches_the_fake_servers_independent_sealer() -> None:
    packet = seal_rtp(100, 48000, 42, b"opus!", KEY, counter=77)
    opened = TransportCipher(XCHACHA20, KEY).open(packet)
    assert opened is not None and opened[1] == b"opus!" and opened[0].ssrc == 42


def test_xchacha_opens_what_nextcord_sends() -> None:
    from types import SimpleNamespace

    from nextcord.voice_client import VoiceClient

    fake = SimpleNamespace(secret_key=list(KEY), _incr_nonce=9, checked_add=lambda *a: None)
    header = build_header(3, 480, 99)
    packet = VoiceClient._encrypt_aead_xchacha20_poly1305_rtpsize(fake, header, b"frame")  # type: ignore[arg-type]
    opened = TransportCipher(XCHACHA20, KEY).open(packet)
    assert opened is not None and opened[1] == b"frame"


def test_aes_gcm_nonce_is_the_counter_padded_to_12_bytes() -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    header = build_header(1, 2, 3)
    packet = TransportCipher(AES256_GCM, KEY).seal(header, b"abc", counter=0x01020304)
    expected = AESGCM(KEY).encrypt(b"\x01\x02\x03\x04" + bytes(8), b"abc", header)
    assert packet == header + expected + b"\x01\x02\x03\x04"


@pytest.mark.parametrize("mode", MODES)
def test_tampered_or_wrong_key_packets_are_rejected(mode: str) -> None:
    cipher = TransportCipher(mode, KEY)
    packet = bytearray(cipher.seal(build_header(1, 2, 3, extension_body=bytes(4)), bytes(4) + b"payload", 1))
    for index in (1, 14, len(packet) - 10, len(packet) - 1):  # header, ciphertext, tag, counter
        bad = bytearray(packet)
        bad[index] ^= 0x01
        assert cipher.open(bytes(bad)) is None
    assert TransportCipher(mode, os.urandom(32)).open(bytes(packet)) is None
    assert cipher.open(bytes(packet[:20])) is None


def test_classification_of_datagrams() -> None:
    rtp = build_header(1, 2, 3) + bytes(30)
    rtcp = bytes([0x81, 200]) + bytes(30)
    discovery = struct.pack(">HHI", 2, 70, 3) + bytes(66)
    assert is_audio_rtp(rtp) and not is_rtcp(rtp)
    assert is_rtcp(rtcp) and not is_audio_rtp(rtcp)
    assert all(is_rtcp(bytes([0x80, pt]) + bytes(10)) for pt in range(200, 205))
    assert is_ip_discovery(discovery) and not is_audio_rtp(discovery)
    assert not is_audio_rtp(bytes([0x40]) + bytes(20))  # RTP version 1


def test_csrcs_are_part_of_the_aad() -> None:
    cipher = TransportCipher(XCHACHA20, KEY)
    header = build_header(5, 6, 7, csrcs=(11, 22), extension_body=bytes(8))
    packet = cipher.seal(header, bytes(8) + b"x", 3)
    parsed = parse_header(packet)
    assert parsed.csrcs == (11, 22) and parsed.aad_size == 12 + 8 + 4
    assert cipher.open(packet) == (parsed, b"x")


@given(st.binary(max_size=200))
def test_open_never_raises_on_garbage(data: bytes) -> None:
    for mode in MODES:
        assert TransportCipher(mode, KEY).open(data) is None or is_audio_rtp(data)
