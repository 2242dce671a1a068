"""Streamed speech into a call: sentences → Piper → 48 kHz frames → one continuous frame queue.

Why one queue per answer: sentences are synthesised (in threads) while the text is still
being generated, and their frames follow each other in ONE stream, so a call hears no gaps
between sentences. Nothing here knows Discord: a transport plays a `FrameQueue` through an
`AudioSink` (push frames, stop, pause, wait until it can encrypt). Nothing is played before the
sink is ready: frames sent before a call's DAVE key exists would be dropped by every client.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

from assistant.audio import discord_frames
from assistant.speech.synth import SpeechAudio

logger = logging.getLogger(__name__)

SILENCE = b"\0" * 3840  # one 20 ms frame of 48 kHz stereo s16
READY_WAIT_S = 5.0
FRAME_S = 0.02


class FrameQueue:
    """PCM frames pushed from the event loop, read by the transport's player thread every 20 ms.

    While the next sentence is being synthesised it reads as silence; after `close()` and the
    last frame it reads b"" and playback ends. `on_first_frame` runs in the player thread
    right before the first real frame goes out (the latency mark).
    """

    def __init__(self, on_first_frame: Callable[[], None] | None = None) -> None:
        self._frames: queue.Queue[bytes] = queue.Queue()
        self._closed = False
        self.first_frame_at: float | None = None
        self.last_frame_at: float | None = None
        self._on_first_frame = on_first_frame

    def push(self, frames: list[bytes]) -> None:
        for frame in frames:
            self._frames.put(frame)

    def close(self) -> None:
        self._closed = True

    def read(self) -> bytes:
        try:
            frame = self._frames.get_nowait()
        except queue.Empty:
            return b"" if self._closed else SILENCE
        self.last_frame_at = time.monotonic()
        if self.first_frame_at is None:
            self.first_frame_at = self.last_frame_at
            if self._on_first_frame is not None:
                self._on_first_frame()
        return frame

    def closed_empty(self) -> bool:
        """Closed with every pushed frame read: it played to its end (was not cut off)."""
        return self._closed and self._frames.empty()


class AudioSink(Protocol):
    """What a transport offers the voice call: one stream of 48 kHz stereo s16 frames at a time."""

    def connected(self) -> bool: ...

    async def ready(self, timeout: float) -> bool:
        """True once frames can be sent encrypted (or the call has no end-to-end encryption)."""

    def play(self, frames: FrameQueue) -> None:
        """Start reading `frames` every 20 ms, replacing whatever was playing."""

    def playing(self, frames: FrameQueue) -> bool:
        """`frames` is the stream being played (paused counts: it may resume)."""

    def stop(self, frames: FrameQueue) -> None:
        """Stop playing `frames` for good, if it is the stream being played."""

    def pause(self, frames: FrameQueue) -> None: ...

    def resume(self, frames: FrameQueue) -> None: ...


async def speak_deltas(sink: AudioSink, speech: SpeakStream, deltas: AsyncIterator[str], frames: FrameQueue,
                       before_play: Callable[[], Awaitable[None]] | None = None) -> bool:
    """Synthesise `deltas` sentence by sentence into `frames`, starting playback after the first
    sentence. False when nothing could play (no encryption key, or the call is gone). Leaves
    `frames` open: the caller closes it.

    `before_play` is awaited once the first sentence is ready and before anything plays: a
    speculative answer is prepared during the user's trailing silence and waits there until
    the silence confirms the utterance ended; synthesis goes on meanwhile."""
    if not await sink.ready(READY_WAIT_S):
        logger.warning("Voice encryption key never arrived; not speaking this answer.")
        return False
    started = False
    async for audio in speech.speak_stream(deltas):
        frames.push(await asyncio.to_thread(_frames, audio))
        if not started:
            if before_play is not None:
                await before_play()
            if not sink.connected():
                return False
            sink.play(frames)
            started = True
    return started


async def until_played(sink: AudioSink, frames: FrameQueue) -> None:
    """Wait until the player has read `frames` to its end (it must be closed) or was stopped
    (a paused stream is still playing: a barge-in may resume it)."""
    while sink.connected() and sink.playing(frames):
        await asyncio.sleep(FRAME_S)


class SpeakStream(Protocol):
    def speak_stream(self, text_deltas: AsyncIterator[str]) -> AsyncIterator[SpeechAudio]: ...


def _frames(audio: SpeechAudio) -> list[bytes]:
    return list(discord_frames(audio.samples, audio.rate))
