"""Audio in and out with PyAV (FFmpeg as a library: no ffmpeg binary, no temp files).

In: whatever a Discord user attaches (OGG/Opus voice messages, mp3, m4a, wav, webm, flac)
becomes 16 kHz mono float32, the only thing the recogniser accepts. Limits are enforced as
early as each can be known: the byte size before opening, the container's declared duration
before decoding, and the decoded length while decoding (a container may lie or say nothing).

Out: speech becomes 48 kHz stereo 16-bit PCM in 20 ms frames (what Discord voice sends),
an OGG/Opus file (what a Discord voice message is) with its duration and waveform, or WAV.
Everything works on bytes in memory, so a failure can leave nothing behind on disk.
"""

from __future__ import annotations

import base64
import io
import logging
import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np
from av.audio.resampler import AudioResampler

from assistant.errors import AudioError

logger = logging.getLogger(__name__)

RECOGNITION_RATE = 16_000
DISCORD_RATE = 48_000
DISCORD_FRAME_MS = 20
DISCORD_FRAME_BYTES = DISCORD_RATE * DISCORD_FRAME_MS // 1000 * 2 * 2  # stereo, s16: 3840
VOICE_MESSAGE_RATE = 48_000  # Opus only runs at 48 kHz (or its divisors); Discord plays 48 kHz
WAVEFORM_MAX_POINTS = 256  # Discord voice messages: at most 256 one-byte amplitude samples


@dataclass(frozen=True)
class AudioLimits:
    """How much audio one request may bring (from speech.max_audio_seconds / max_audio_bytes)."""

    max_seconds: float
    max_bytes: int


@dataclass(frozen=True)
class VoiceMessage:
    """An OGG/Opus file plus the metadata a Discord voice message must declare."""

    data: bytes
    duration_s: float
    waveform: str  # base64 of up to 256 bytes, 0..255 amplitude


def _mib(n: float) -> str:
    return f"{n / (1024 * 1024):.1f} MiB" if n >= 1024 * 1024 else f"{n / 1024:.0f} KiB"


def _read_source(source: bytes | Path, limits: AudioLimits) -> bytes:
    """The file's bytes, refusing oversized input by its size alone (before reading it)."""
    if isinstance(source, Path):
        try:
            size = source.stat().st_size
        except OSError:
            raise AudioError(f"Cannot read the audio file {source}: it does not exist or is not readable.") from None
        if size > limits.max_bytes:
            raise AudioError(f"The audio file is {_mib(size)}, over the limit of {_mib(limits.max_bytes)}; "
                             "send a shorter recording.")
        source = source.read_bytes()
    if len(source) > limits.max_bytes:
        raise AudioError(f"The audio is {_mib(len(source))}, over the limit of {_mib(limits.max_bytes)}; "
                         "send a shorter recording.")
    if not source:
        raise AudioError("The audio file is empty; record the message again.")
    return source


def _too_long(seconds: float, limits: AudioLimits) -> AudioError:
    return AudioError(f"The audio is {seconds:.0f} s long, over the limit of {limits.max_seconds:.0f} s; "
                      "send a shorter recording.")


def _declared_seconds(container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def decode_audio(source: bytes | Path, limits: AudioLimits, *, rate: int = RECOGNITION_RATE) -> np.ndarray:
    """Decode any audio FFmpeg knows into mono float32 at `rate`; raise AudioError on anything wrong.

    Truncated files decode up to where they stop (a cut-off voice message is still worth
    hearing); files with no decodable audio at all, or over the limits, raise AudioError.
    """
    data = _read_source(source, limits)
    max_samples = int(limits.max_seconds * rate)
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.error.FFmpegError, ValueError, EOFError) as exc:
        logger.debug("av.open failed: %s", exc)
        raise AudioError("This file is not audio we can read (damaged, or not a sound file); "
                         "send an OGG, MP3, M4A, WAV, WEBM or FLAC recording.") from None
    with container:
        if not container.streams.audio:
            raise AudioError("This file has no sound in it; send an audio recording.")
        stream = container.streams.audio[0]
        declared = _declared_seconds(container, stream)
        if declared is not None and declared > limits.max_seconds:
            raise _too_long(declared, limits)
        resampler = AudioResampler(format="flt", layout="mono", rate=rate)
        pieces: list[np.ndarray] = []
        total = 0
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    piece = out.to_ndarray().reshape(-1)
                    pieces.append(piece)
                    total += piece.size
                if total > max_samples:
                    raise _too_long(total / rate, limits)
        except av.error.FFmpegError as exc:
            if not pieces:
                logger.debug("decode failed: %s", exc)
                raise AudioError("This audio is damaged and cannot be decoded; record it again.") from None
            logger.info("Audio stopped decoding after %.1f s (%s); using what was there", total / rate, exc)
        for out in resampler.resample(None):
            pieces.append(out.to_ndarray().reshape(-1))
    if not pieces:
        raise AudioError("This file contains no audio samples; record the message again.")
    return np.concatenate(pieces).astype(np.float32, copy=False)


def resample(audio: np.ndarray, rate_in: int, rate_out: int, *, layout: str = "mono",
             fmt: str = "flt") -> np.ndarray:
    """Resample mono float32 audio; returns shape (samples,) for mono or (samples, 2) for stereo."""
    audio = np.ascontiguousarray(audio, dtype=np.float32).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(audio, format="flt", layout="mono")
    frame.sample_rate = rate_in
    resampler = AudioResampler(format=fmt, layout=layout, rate=rate_out)
    pieces = [f.to_ndarray() for f in resampler.resample(frame) + resampler.resample(None)]
    if not pieces:
        channels = 2 if layout == "stereo" else 1
        return np.zeros((0, channels) if channels > 1 else 0, dtype=np.float32 if fmt == "flt" else np.int16)
    joined = np.concatenate(pieces, axis=1)  # packed formats: (1, samples * channels)
    return joined.reshape(-1, 2) if layout == "stereo" else joined.reshape(-1)


def discord_frames(audio: np.ndarray, rate: int) -> Iterator[bytes]:
    """48 kHz stereo s16le in 20 ms frames of exactly 3,840 bytes (the last padded with silence)."""
    pcm = resample(audio, rate, DISCORD_RATE, layout="stereo", fmt="s16").tobytes()
    for start in range(0, len(pcm), DISCORD_FRAME_BYTES):
        frame = pcm[start:start + DISCORD_FRAME_BYTES]
        yield frame.ljust(DISCORD_FRAME_BYTES, b"\0")


def encode_wav(audio: np.ndarray, rate: int) -> bytes:
    """16-bit mono WAV."""
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)
    return buf.getvalue()


def encode_ogg_opus(audio: np.ndarray, rate: int, *, bitrate: int = 32_000) -> bytes:
    """Mono OGG/Opus at 48 kHz, the format of Discord voice messages."""
    samples = resample(audio, rate, VOICE_MESSAGE_RATE)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=VOICE_MESSAGE_RATE)
        stream.bit_rate = bitrate
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = VOICE_MESSAGE_RATE
        frame.time_base = Fraction(1, VOICE_MESSAGE_RATE)
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


def waveform(audio: np.ndarray, rate: int, *, max_points: int = WAVEFORM_MAX_POINTS) -> str:
    """Base64 of ≤ 256 peak amplitudes (0..255), one per ~100 ms as Discord clients draw it."""
    points = max(1, min(max_points, int(np.ceil(audio.size / rate * 10))))
    if audio.size == 0:
        return base64.b64encode(bytes(points)).decode("ascii")
    chunks = np.array_split(np.abs(audio), points)
    peaks = np.array([c.max() if c.size else 0.0 for c in chunks])
    scaled = np.clip(peaks / max(float(peaks.max()), 1e-9) * 255, 0, 255).astype(np.uint8)
    return base64.b64encode(scaled.tobytes()).decode("ascii")


def voice_message(audio: np.ndarray, rate: int) -> VoiceMessage:
    """Everything a Discord voice-message reply needs."""
    return VoiceMessage(data=encode_ogg_opus(audio, rate), duration_s=round(audio.size / rate, 2),
                        waveform=waveform(audio, rate))


def write_audio(path: Path, audio: np.ndarray, rate: int) -> Path:
    """Write `.wav` or `.ogg`/`.opus` by the file's suffix (atomically: a partial file never remains)."""
    suffix = path.suffix.lower()
    if suffix == ".wav":
        data = encode_wav(audio, rate)
    elif suffix in (".ogg", ".opus", ".oga"):
        data = encode_ogg_opus(audio, rate)
    else:
        raise AudioError(f"Cannot write {path.name}: use a .wav or .ogg file name.")
    tmp = path.with_name(f".{path.name}.partial")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise AudioError(f"Cannot write {path}: {exc.strerror}; choose another place.") from None
    return path
