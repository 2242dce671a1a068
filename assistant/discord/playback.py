"""A Discord voice client as the voice call's `AudioSink` (see `assistant.voice.playback`).

The core fills a `FrameQueue`; nextcord's player thread reads it every 20 ms through
`FrameQueueSource`. "Ready" means the call holds its DAVE key: frames sent earlier would go
out unencrypted and be dropped by every other client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import nextcord

from assistant.voice.playback import FRAME_S, FrameQueue

logger = logging.getLogger(__name__)


class FrameQueueSource(nextcord.AudioSource):
    """nextcord's view of one `FrameQueue`."""

    def __init__(self, frames: FrameQueue) -> None:
        self.frames = frames

    def read(self) -> bytes:
        return self.frames.read()

    def is_opus(self) -> bool:
        return False


class DiscordSink:
    """Plays one `FrameQueue` at a time on a nextcord voice client."""

    def __init__(self, vc: Any) -> None:
        self.vc = vc

    def connected(self) -> bool:
        return bool(self.vc.is_connected())

    async def ready(self, timeout: float) -> bool:
        """True once the call can encrypt (or has no DAVE)."""
        waiter = getattr(self.vc, "wait_until_can_encrypt", None)
        if waiter is not None:
            return bool(await waiter(timeout))
        state = getattr(self.vc, "e2ee_state", None)
        deadline = time.monotonic() + timeout
        while state is not None and not state.can_encrypt():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(FRAME_S)
        return True

    def play(self, frames: FrameQueue) -> None:
        if self.vc.is_playing() or self.vc.is_paused():
            self.vc.stop()
        self.vc.play(FrameQueueSource(frames), after=_log_playback_error)

    def playing(self, frames: FrameQueue) -> bool:
        return self._current(frames) and bool(self.vc.is_playing() or self.vc.is_paused())

    def stop(self, frames: FrameQueue) -> None:
        if self.playing(frames):
            self.vc.stop()

    def pause(self, frames: FrameQueue) -> None:
        if self._current(frames) and self.vc.is_playing():
            self.vc.pause()

    def resume(self, frames: FrameQueue) -> None:
        if self._current(frames) and self.vc.is_paused():
            self.vc.resume()

    def _current(self, frames: FrameQueue) -> bool:
        source = getattr(self.vc, "source", None)
        return isinstance(source, FrameQueueSource) and source.frames is frames


def _log_playback_error(error: Exception | None) -> None:
    if error is not None:
        logger.warning("Playback error: %s", error)
