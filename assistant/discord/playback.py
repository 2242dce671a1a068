"""Playing streamed speech in a voice call: one continuous audio source fed sentence by sentence.

Both the text chat (an answer also spoken in the author's voice channel) and the listening
voice session speak through `speak_deltas`: sentences are split and synthesised (Piper, in
threads) while the text is still being generated, and the 48 kHz stereo frames go to ONE
`FrameQueueSource`, so sentences follow each other without gaps in the RTP stream.
Nothing is played before the call's DAVE key exists: frames sent earlier would go out
unencrypted and be dropped by every other client.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import nextcord

from assistant.audio import discord_frames
from assistant.speech.synth import SpeechAudio

logger = logging.getLogger(__name__)

SILENCE = b"\0" * 3840  # one 20 ms frame of 48 kHz stereo s16
DAVE_WAIT_S = 5.0
FRAME_S = 0.02


class FrameQueueSource(nextcord.AudioSource):
    """PCM frames pushed from the event loop, read by nextcord's player thread every 20 ms.

    While the next sentence is being synthesised it plays silence; after `close()` and
    the last frame it returns b"" and playback ends. `on_first_frame` runs in the player
    thread right before the first real frame is encoded and sent (the latency mark).
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

    def is_opus(self) -> bool:
        return False


async def wait_for_dave(vc: Any, timeout: float = DAVE_WAIT_S) -> bool:
    """True once the call can encrypt (or has no DAVE)."""
    waiter = getattr(vc, "wait_until_can_encrypt", None)
    if waiter is not None:
        return bool(await waiter(timeout))
    state = getattr(vc, "e2ee_state", None)
    deadline = time.monotonic() + timeout
    while state is not None and not state.can_encrypt():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(FRAME_S)
    return True


async def speak_deltas(vc: Any, speech: Any, deltas: AsyncIterator[str], source: FrameQueueSource,
                       before_play: Callable[[], Awaitable[None]] | None = None) -> bool:
    """Synthesise `deltas` sentence by sentence into `source`, starting playback after the
    first sentence (a newer answer replaces one still playing). False when nothing could play
    (no DAVE key, or the call is gone). Leaves `source` open: the caller closes it.

    `before_play` is awaited once the first sentence is ready and before anything plays: a
    speculative answer is prepared during the user's trailing silence and waits there until
    the silence confirms the utterance ended; synthesis goes on meanwhile."""
    if not await wait_for_dave(vc):
        logger.warning("Voice encryption key never arrived; not speaking this answer.")
        return False
    started = False
    async for audio in speech.speak_stream(deltas):
        frames = await asyncio.to_thread(_frames, audio)
        source.push(frames)
        if not started:
            if before_play is not None:
                await before_play()
            if not vc.is_connected():
                return False
            if vc.is_playing() or vc.is_paused():
                vc.stop()
            vc.play(source, after=_log_playback_error)
            started = True
    return started


async def until_played(vc: Any, source: FrameQueueSource) -> None:
    """Wait until the player has read `source` to its end (it must be closed) or was stopped
    (a paused player is still playing it: a barge-in may resume it)."""
    while vc.is_connected() and (vc.is_playing() or vc.is_paused()) and getattr(vc, "source", None) is source:
        await asyncio.sleep(FRAME_S)


def _frames(audio: SpeechAudio) -> list[bytes]:
    return list(discord_frames(audio.samples, audio.rate))


def _log_playback_error(error: Exception | None) -> None:
    if error is not None:
        logger.warning("Playback error: %s", error)
