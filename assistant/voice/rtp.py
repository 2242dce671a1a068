"""RTP framing of Discord voice packets, and telling RTP apart from RTCP and IP discovery.

Discord multiplexes three kinds of datagram on one UDP socket: RTP audio, RTCP reports
(payload types 200-204 in the second byte) and the 74-byte IP-discovery reply. Only RTP
audio reaches the decoders; the rest is counted and dropped.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

RTP_HEADER_SIZE = 12
RTP_VERSION = 2
RTCP_PAYLOAD_TYPES = range(200, 205)
IP_DISCOVERY_SIZE = 74
EXTENSION_PROFILE_ONE_BYTE = 0xBEDE


@dataclass(frozen=True, slots=True)
class RtpHeader:
    """The fixed header plus what the transport layer needs to find the payload.

    `aad_size` is the number of leading bytes sent in the clear and authenticated
    (12 + 4 * CSRC count + 4 when the X bit is set): the rtpsize layout encrypts the
    extension *body* along with the payload, so `extension_body_size` bytes must be
    stripped from the decrypted data before the Opus (or DAVE) frame begins.
    """

    marker: bool
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    csrcs: tuple[int, ...]
    has_extension: bool
    extension_profile: int
    extension_body_size: int
    aad_size: int


class NotRtpError(ValueError):
    """The datagram is not a well-formed RTP packet (too short, wrong version)."""


def is_rtcp(packet: bytes) -> bool:
    return len(packet) >= 2 and packet[1] in RTCP_PAYLOAD_TYPES


def is_ip_discovery(packet: bytes) -> bool:
    """A discovery request or reply: type 1 or 2, length 70, 74 bytes in all."""
    return len(packet) == IP_DISCOVERY_SIZE and packet[0:2] in (b"\x00\x01", b"\x00\x02") and packet[2:4] == b"\x00\x46"


def is_audio_rtp(packet: bytes) -> bool:
    """True for datagrams worth handing to `parse_header`: RTP v2, not RTCP, not discovery."""
    return (len(packet) >= RTP_HEADER_SIZE and packet[0] >> 6 == RTP_VERSION
            and not is_rtcp(packet) and not is_ip_discovery(packet))


def parse_header(packet: bytes) -> RtpHeader:
    if len(packet) < RTP_HEADER_SIZE:
        raise NotRtpError(f"{len(packet)} bytes is shorter than an RTP header")
    first, second, sequence, timestamp, ssrc = struct.unpack_from(">BBHII", packet)
    if first >> 6 != RTP_VERSION:
        raise NotRtpError(f"RTP version {first >> 6}, expected 2")
    csrc_count = first & 0x0F
    offset = RTP_HEADER_SIZE + 4 * csrc_count
    if len(packet) < offset:
        raise NotRtpError("packet ends inside its CSRC list")
    csrcs = struct.unpack_from(f">{csrc_count}I", packet, RTP_HEADER_SIZE) if csrc_count else ()
    has_extension = bool(first & 0x10)
    profile = body = 0
    if has_extension:
        if len(packet) < offset + 4:
            raise NotRtpError("packet ends inside its header extension")
        profile, words = struct.unpack_from(">HH", packet, offset)
        body = 4 * words
        offset += 4
    return RtpHeader(
        marker=bool(second & 0x80), payload_type=second & 0x7F, sequence=sequence, timestamp=timestamp,
        ssrc=ssrc, csrcs=tuple(csrcs), has_extension=has_extension, extension_profile=profile,
        extension_body_size=body, aad_size=offset,
    )


def build_header(sequence: int, timestamp: int, ssrc: int, *, payload_type: int = 0x78,
                 extension_body: bytes = b"", csrcs: tuple[int, ...] = (), marker: bool = False) -> bytes:
    """The clear-text part of a packet (the rtpsize AAD): header, CSRCs, extension header.

    `extension_body` is not included: it travels encrypted in front of the payload.
    """
    if len(extension_body) % 4:
        raise ValueError("an RTP header extension body is a whole number of 32-bit words")
    first = 0x80 | (0x10 if extension_body else 0) | len(csrcs)
    header = struct.pack(">BBHII", first, (0x80 if marker else 0) | payload_type,
                         sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc)
    header += b"".join(struct.pack(">I", c) for c in csrcs)
    if extension_body:
        header += struct.pack(">HH", EXTENSION_PROFILE_ONE_BYTE, len(extension_body) // 4)
    return header
