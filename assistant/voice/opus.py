"""Opus through libopus directly (ctypes), sized for the *output* channel count.

nextcord's `opus.Decoder.decode` sizes its buffer by the packet's channel count while
libopus writes the decoder's (stereo), so a mono packet — such as the silence frame
`f8 ff fe` every Discord client sends after a talk spurt — overruns it and aborts the
process. Here the buffer always holds the longest frame Opus allows (120 ms) at the
decoder's channel count. Decoding without data runs libopus packet-loss concealment.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache

import numpy as np

from assistant.errors import AudioError

SAMPLE_RATE = 48000
CHANNELS = 2
FRAME_SAMPLES = 960  # 20 ms at 48 kHz, per channel
MAX_FRAME_SAMPLES = 5760  # 120 ms, the longest Opus frame
APPLICATION_VOIP = 2048
APPLICATION_AUDIO = 2049
_SET_BITRATE = 4002

_c_int16_p = ctypes.POINTER(ctypes.c_int16)
_c_uchar_p = ctypes.POINTER(ctypes.c_ubyte)


class OpusError(AudioError):
    """libopus refused a packet or a setting."""


@lru_cache(maxsize=1)
def libopus() -> ctypes.CDLL:
    name = ctypes.util.find_library("opus")
    if name is None:
        raise OpusError("libopus is not installed; install it (Debian: apt-get install libopus0) to use voice.")
    lib = ctypes.CDLL(name)
    lib.opus_decoder_create.restype = ctypes.c_void_p
    lib.opus_decoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    lib.opus_decode.restype = ctypes.c_int
    lib.opus_decode.argtypes = [ctypes.c_void_p, _c_uchar_p, ctypes.c_int32, _c_int16_p, ctypes.c_int, ctypes.c_int]
    lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
    lib.opus_encoder_create.restype = ctypes.c_void_p
    lib.opus_encoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    lib.opus_encode.restype = ctypes.c_int32
    lib.opus_encode.argtypes = [ctypes.c_void_p, _c_int16_p, ctypes.c_int, _c_uchar_p, ctypes.c_int32]
    lib.opus_encoder_destroy.argtypes = [ctypes.c_void_p]
    lib.opus_strerror.restype = ctypes.c_char_p
    lib.opus_strerror.argtypes = [ctypes.c_int]
    return lib


def _check(code: int, what: str) -> int:
    if code < 0:
        raise OpusError(f"Opus {what} failed: {libopus().opus_strerror(code).decode()}")
    return code


class OpusDecoder:
    """One speaker's decoder (Opus decoding is stateful: never share one between speakers)."""

    def __init__(self, sample_rate: int = SAMPLE_RATE, channels: int = CHANNELS) -> None:
        lib = libopus()
        error = ctypes.c_int(0)
        self._state = lib.opus_decoder_create(sample_rate, channels, ctypes.byref(error))
        _check(error.value, "decoder creation")
        self.channels = channels
        self._pcm = np.zeros(MAX_FRAME_SAMPLES * channels, dtype=np.int16)

    def decode(self, packet: bytes | None, frame_samples: int = FRAME_SAMPLES) -> np.ndarray:
        """int16 PCM, shape (samples, channels). `packet=None` conceals one lost frame."""
        pcm = self._pcm.ctypes.data_as(_c_int16_p)
        if packet is None:
            n = libopus().opus_decode(self._state, None, 0, pcm, frame_samples, 0)
        else:
            data = (ctypes.c_ubyte * len(packet)).from_buffer_copy(packet)
            n = libopus().opus_decode(self._state, data, len(packet), pcm, MAX_FRAME_SAMPLES, 0)
        _check(n, "decoding")
        return self._pcm[: n * self.channels].reshape(n, self.channels).copy()

    def __del__(self) -> None:
        state, self._state = getattr(self, "_state", None), None
        if state:
            libopus().opus_decoder_destroy(state)


class OpusEncoder:
    """20 ms frames of 48 kHz int16 PCM in, Opus packets out (playback and test speakers)."""

    def __init__(self, channels: int = CHANNELS, bitrate: int = 64000, application: int = APPLICATION_AUDIO) -> None:
        lib = libopus()
        error = ctypes.c_int(0)
        self._state = lib.opus_encoder_create(SAMPLE_RATE, channels, application, ctypes.byref(error))
        _check(error.value, "encoder creation")
        self.channels = channels
        ctl = lib.opus_encoder_ctl
        ctl.restype = ctypes.c_int
        _check(ctl(ctypes.c_void_p(self._state), ctypes.c_int(_SET_BITRATE), ctypes.c_int32(bitrate)), "bitrate")
        self._out = (ctypes.c_ubyte * 4000)()

    def encode(self, frame: np.ndarray) -> bytes:
        pcm = np.ascontiguousarray(frame, dtype=np.int16).reshape(-1)
        samples = len(pcm) // self.channels
        n = libopus().opus_encode(self._state, pcm.ctypes.data_as(_c_int16_p), samples, self._out, len(self._out))
        return bytes(self._out[: _check(n, "encoding")])

    def __del__(self) -> None:
        state, self._state = getattr(self, "_state", None), None
        if state:
            libopus().opus_encoder_destroy(state)


def encode_pcm(pcm: np.ndarray, channels: int = CHANNELS) -> list[bytes]:
    """48 kHz int16 PCM (mono (n,) or (n, channels)) to 20 ms packets, the last one zero-padded."""
    data = pcm.reshape(-1, 1) if pcm.ndim == 1 else pcm
    if data.shape[1] != channels:
        data = np.repeat(data[:, :1], channels, axis=1)
    pad = (-len(data)) % FRAME_SAMPLES
    data = np.concatenate([data, np.zeros((pad, channels), np.int16)]).astype(np.int16)
    encoder = OpusEncoder(channels)
    return [encoder.encode(data[i:i + FRAME_SAMPLES]) for i in range(0, len(data), FRAME_SAMPLES)]
