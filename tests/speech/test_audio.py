"""PyAV in and out: formats, Discord frames, voice-message metadata, limits and bad input."""

from __future__ import annotations

import base64
import io
import os
import tempfile
from pathlib import Path

import av
import numpy as np
import pytest

from assistant.audio import (DISCORD_FRAME_BYTES, AudioLimits, decode_audio, discord_frames, encode_ogg_opus,
                             encode_wav, voice_message, waveform, write_audio)
from assistant.errors import AudioError

LIMITS = AudioLimits(max_seconds=60, max_bytes=10 << 20)
RATE = 22_050


def tone(seconds: float = 1.0, rate: int = RATE, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def encode_with_av(audio: np.ndarray, rate: int, fmt: str, codec: str) -> bytes:
    """Files as other apps make them (mp3, m4a, webm, flac), to check we read them all."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=fmt) as out:
        stream = out.add_stream(codec, rate=48000 if codec == "libopus" else 44100)
        stream.layout = "mono"
        from assistant.audio import resample
        samples = resample(audio, rate, stream.rate)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = stream.rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


@pytest.mark.parametrize("fmt, codec", [("mp3", "libmp3lame"), ("ipod", "aac"), ("webm", "libopus"),
                                        ("flac", "flac"), ("ogg", "libopus")])
def test_decodes_common_attachment_formats(fmt: str, codec: str) -> None:
    data = encode_with_av(tone(1.0), RATE, fmt, codec)
    audio = decode_audio(data, LIMITS)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.size / 16000 - 1.0) < 0.1
    rms = float(np.sqrt(np.mean(audio[4000:12000] ** 2)))
    assert 0.3 < rms < 0.4  # a 0.5-peak sine: rms 0.354


def test_ogg_opus_round_trip_keeps_length_and_shape() -> None:
    source = tone(2.0)
    audio = decode_audio(encode_ogg_opus(source, RATE), LIMITS)
    assert abs(audio.size - 32000) <= 16
    spectrum = np.abs(np.fft.rfft(audio[4000:20000]))
    assert abs(np.argmax(spectrum) * 16000 / 16000 - 440) < 5  # 1 Hz per bin over one second


def test_wav_from_a_path(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "a.wav", tone(0.5), RATE)
    audio = decode_audio(path, LIMITS)
    assert abs(audio.size - 8000) <= 2


def test_discord_frames_are_20ms_stereo_s16() -> None:
    frames = list(discord_frames(tone(1.0), RATE))
    assert len(frames) == 50 and all(len(f) == DISCORD_FRAME_BYTES == 3840 for f in frames)
    pcm = np.frombuffer(frames[10], dtype="<i2").reshape(-1, 2)
    assert (pcm[:, 0] == pcm[:, 1]).all() and np.abs(pcm).max() > 10000


def test_voice_message_metadata() -> None:
    message = voice_message(tone(3.0), RATE)
    assert message.data[:4] == b"OggS"
    assert message.duration_s == pytest.approx(3.0, abs=0.01)
    points = base64.b64decode(message.waveform)
    assert len(points) == 30 and max(points) == 255
    long_wave = base64.b64decode(waveform(tone(60.0, rate=8000), 8000))
    assert len(long_wave) == 256


def test_write_audio_refuses_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match=r"\.wav or \.ogg"):
        write_audio(tmp_path / "a.mp4", tone(0.1), RATE)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"this is a text file, renamed to .ogg" * 20, "not audio we can read"),
    (b"OggS" + bytes(200), "not audio we can read"),
])
def test_bad_input_gives_a_friendly_error(data: bytes, message: str) -> None:
    with pytest.raises(AudioError, match=message):
        decode_audio(data, LIMITS)


def test_a_file_without_sound(tmp_path: Path) -> None:
    with pytest.raises(AudioError):
        decode_audio(Path(tmp_path / "missing.ogg"), LIMITS)


def test_truncated_audio_decodes_what_is_there() -> None:
    data = encode_ogg_opus(tone(4.0), RATE)
    with pytest.raises(AudioError):
        decode_audio(data[:60], LIMITS)  # the header alone
    half = decode_audio(data[:len(data) // 2], LIMITS)
    assert 1.0 < half.size / 16000 < 3.0


def test_size_limit_is_checked_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "big.ogg"
    path.write_bytes(b"\0" * 5000)  # not even audio: the size check must come first
    with pytest.raises(AudioError, match="over the limit"):
        decode_audio(path, AudioLimits(max_seconds=60, max_bytes=4096))


def test_duration_limit_from_the_container_and_while_decoding() -> None:
    data = encode_ogg_opus(tone(5.0), RATE)
    with pytest.raises(AudioError, match="5 s long, over the limit of 2 s"):
        decode_audio(data, AudioLimits(max_seconds=2, max_bytes=1 << 20))
    raw = encode_wav(tone(5.0), RATE)
    with pytest.raises(AudioError, match="over the limit of 2 s"):
        decode_audio(raw, AudioLimits(max_seconds=2, max_bytes=1 << 20))


def test_bad_input_leaves_no_temp_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    tempfile.tempdir = None
    try:
        for data in (b"", b"junk" * 100, encode_ogg_opus(tone(1.0), RATE)[:80]):
            with pytest.raises(AudioError):
                decode_audio(data, LIMITS)
        decode_audio(encode_ogg_opus(tone(1.0), RATE), LIMITS)
        assert os.listdir(tmp_path) == []
    finally:
        tempfile.tempdir = None
