"""Per-speaker audio: Opus via libopus (mono packets included), concealment, jitter, resampling."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from assistant.voice.jitter import MAX_CONCEALED, JitterBuffer, seq_distance
from assistant.voice.opus import FRAME_SAMPLES, OpusDecoder, encode_pcm
from assistant.voice.resample import Downsampler


def tone(freq: float, seconds: float, rate: int = 48000, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def peak_hz(signal: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    return float(np.fft.rfftfreq(len(signal), 1 / rate)[spectrum.argmax()])


def test_mono_silence_frame_decodes_to_stereo_without_crashing() -> None:
    pcm = OpusDecoder().decode(b"\xf8\xff\xfe")
    assert pcm.shape == (FRAME_SAMPLES, 2) and np.abs(pcm).max() < 50


def test_mono_encoded_speech_decodes_on_a_stereo_decoder() -> None:
    packets = encode_pcm(tone(440, 0.2), channels=1)
    decoder = OpusDecoder()
    pcm = np.concatenate([decoder.decode(p) for p in packets])
    assert pcm.shape == (len(packets) * FRAME_SAMPLES, 2)
    assert abs(peak_hz(pcm[2000:, 0].astype(np.float32), 48000) - 440) < 10


def test_loss_concealment_continues_the_signal() -> None:
    packets = encode_pcm(tone(300, 0.4))
    decoder = OpusDecoder()
    for p in packets[:10]:
        decoder.decode(p)
    concealed = decoder.decode(None)
    assert concealed.shape == (FRAME_SAMPLES, 2)
    assert np.abs(concealed).mean() > 500, "PLC extrapolates the tone instead of inserting silence"


def test_downsampler_streaming_equals_one_shot_and_keeps_the_band() -> None:
    stereo = np.repeat((tone(1000, 0.5) // 2 + tone(11000, 0.5) // 2)[:, None], 2, axis=1)
    whole = Downsampler()(stereo)
    stream = Downsampler()
    pieces = np.concatenate([stream(stereo[i:i + FRAME_SAMPLES]) for i in range(0, len(stereo), FRAME_SAMPLES)])
    np.testing.assert_allclose(pieces, whole, atol=1e-6)
    assert len(whole) == len(stereo) // 3 and whole.dtype == np.float32
    assert abs(peak_hz(whole, 16000) - 1000) < 10
    spectrum = np.abs(np.fft.rfft(whole))
    freqs = np.fft.rfftfreq(len(whole), 1 / 16000)
    alias = spectrum[np.abs(freqs - 5000) < 50].max()  # 11 kHz folds to 5 kHz if not filtered
    assert alias < spectrum.max() / 100


def test_jitter_buffer_reorders_and_drops_duplicates_and_late_packets() -> None:
    jb = JitterBuffer(depth=3)
    out: list[bytes | None] = []
    for seq in (10, 12, 11, 11, 13, 9, 14):
        out += jb.push(seq, bytes([seq]))
    assert out == [bytes([s]) for s in (10, 11, 12, 13, 14)]
    assert jb.stats.duplicates + jb.stats.late == 2 and jb.stats.lost == 0


def test_jitter_buffer_declares_loss_once_depth_is_exceeded() -> None:
    jb = JitterBuffer(depth=2)
    assert jb.push(1, b"a") == []
    assert jb.push(2, b"b") == [b"a", b"b"]
    assert jb.push(4, b"d") == []
    assert jb.push(5, b"e") == [None, b"d", b"e"]
    assert jb.stats.lost == 1
    assert jb.push(3, b"c") == [], "the lost packet arriving later is late"


def test_jitter_buffer_wraps_and_caps_concealment() -> None:
    jb = JitterBuffer(depth=1)
    assert jb.push(65535, b"x") == [b"x"], "depth 1 never waits"
    assert jb.push(0, b"y") == [b"y"]
    assert jb.push(20, b"z") == [None] * MAX_CONCEALED + [b"z"]
    assert seq_distance(65530, 4) == 10 and seq_distance(4, 65530) == -10


def test_jitter_buffer_follows_a_sender_that_restarts_its_sequence_behind() -> None:
    """A client that restarts its stream (reconnect, new talk spurt from a fresh encoder) may
    pick a sequence number far behind the old one: that is a new stream, not late packets."""
    jb = JitterBuffer(depth=1)
    assert jb.push(30000, b"a") == [b"a"]
    assert jb.push(1000, b"b") == [b"b"]
    assert jb.push(1001, b"c") == [b"c"]
    assert jb.stats.late == 0


def test_flush_emits_everything_held() -> None:
    jb = JitterBuffer(depth=5)
    jb.push(1, b"a")
    jb.push(3, b"c")
    assert jb.flush() == [b"a", None, b"c"]
    assert jb.flush() == []


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 65535), st.integers(2, 60), st.randoms(use_true_random=False),
       st.floats(0.0, 0.3))
def test_jitter_buffer_never_reorders_and_accounts_for_every_packet(start: int, n: int, rnd, loss: float) -> None:
    seqs = [(start + i) & 0xFFFF for i in range(n) if i == 0 or rnd.random() >= loss]
    arrival = list(seqs)
    i = 0
    while i < len(arrival) - 1:  # disjoint swaps of neighbours: reordering by one place
        if rnd.random() < 0.3:
            arrival[i], arrival[i + 1] = arrival[i + 1], arrival[i]
            i += 1
        i += 1
    arrival += arrival[: rnd.randint(0, 3)]  # some duplicates
    jb = JitterBuffer(depth=3)
    out: list[bytes | None] = []
    for s in arrival:
        out += jb.push(s, s.to_bytes(2, "big"))
    out += jb.flush()
    got = [int.from_bytes(p, "big") for p in out if p is not None]
    assert len(got) == len(set(got))
    assert all(seq_distance(a, b) > 0 for a, b in zip(got, got[1:]))
    assert set(got) <= set(seqs) and len(set(seqs) - set(got)) <= jb.stats.late
    if loss == 0:
        assert got == seqs, "swaps of neighbours never exceed the buffer's depth"
