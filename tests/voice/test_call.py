"""A whole live-voice turn without any Discord library: encrypted RTP datagrams in, 48 kHz frames out.

The core's `VoiceReceiver` hears a Piper-spoken question, `VoiceCall` recognises, answers with
the default engine and speaks, and a memory sink plays the frames in real time as a transport's
player thread does; the test transcribes what was played."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from assistant.audio import resample
from assistant.config import Config
from assistant.llm import create_backend
from assistant.llm.base import ChatBackend
from assistant.speech.service import SpeechService
from assistant.store import Store
from assistant.voice.call import VoiceCall
from assistant.voice.e2ee import DaveReceiver
from assistant.voice.playback import SILENCE, FrameQueue
from assistant.voice.receiver import SpeechEvent, VoiceReceiver
from assistant.voice.transport import MODES, TransportCipher
from assistant.voice.turns import Event
from tests.davesim.speaker import RtpSender

pytestmark = [pytest.mark.slow]

RATE = 48_000
USER = 42


class MemorySink:
    """Plays one frame queue at a time on a thread, every 20 ms, and keeps what went out."""

    def __init__(self) -> None:
        self.current: FrameQueue | None = None
        self.paused = False
        self.played: list[tuple[float, bytes]] = []  # (when, frame) of every frame that was not silence
        self._lock = threading.Lock()

    def connected(self) -> bool:
        return True

    async def ready(self, timeout: float) -> bool:
        return True

    def play(self, frames: FrameQueue) -> None:
        with self._lock:
            self.current, self.paused = frames, False
        threading.Thread(target=self._player, args=(frames,), daemon=True).start()

    def _player(self, frames: FrameQueue) -> None:
        while self.current is frames:
            if not self.paused:
                frame = frames.read()
                if not frame:
                    with self._lock:
                        if self.current is frames:
                            self.current = None
                    return
                if frame != SILENCE:
                    self.played.append((time.monotonic(), frame))
            time.sleep(0.02)

    def playing(self, frames: FrameQueue) -> bool:
        return self.current is frames

    def stop(self, frames: FrameQueue) -> None:
        with self._lock:
            if self.current is frames:
                self.current = None

    def pause(self, frames: FrameQueue) -> None:
        if self.current is frames:
            self.paused = True

    def resume(self, frames: FrameQueue) -> None:
        if self.current is frames:
            self.paused = False


@pytest.fixture(scope="module")
def speech(repo_config: Config) -> SpeechService:
    return SpeechService(repo_config.speech, repo_config.storage)


@pytest.fixture(scope="module")
def default_backend(repo_config: Config) -> Iterator[ChatBackend]:
    """The engine and model a fresh clone runs (`backend = "auto"`)."""
    engine = create_backend(repo_config.model, repo_config.storage.models_dir)
    yield engine
    close = getattr(engine, "close", None)
    if close is not None:
        close()


async def test_a_spoken_question_is_answered_by_voice_without_discord(
        tmp_path: Path, repo_config: Config, speech: SpeechService, default_backend: ChatBackend) -> None:
    question = await speech.synthesize("What is the capital of France?")
    pcm = resample(question.samples, question.rate, RATE, layout="stereo", fmt="s16")
    cipher = TransportCipher(MODES[0], os.urandom(32))
    sender = RtpSender(None, 1234, cipher)
    sink = MemorySink()
    store = Store.open(tmp_path / "assistant.sqlite3")
    events: list[SpeechEvent] = []
    receiver: VoiceReceiver | None = None

    def end_turn(user_id: int, speech_end: float) -> None:
        assert receiver is not None
        receiver.end_now(user_id, speech_end, time.monotonic())

    call = VoiceCall(sink, channel_id=7, model=repo_config.model, voice=repo_config.voice,
                     models_dir=repo_config.storage.models_dir, backend=default_backend, speech=speech,
                     store=store, conversation_key="voice:7", name_of=lambda user: "Alice",
                     end_turn=end_turn, debug_dir=tmp_path / "debug")

    def on_event(event: SpeechEvent) -> None:
        events.append(event)
        call.on_event(event)

    receiver = VoiceReceiver(lambda: cipher, DaveReceiver(lambda: None), on_event)
    receiver.map_ssrc(1234, USER)
    call.address(USER)  # the default answer mode: whoever addressed the bot is answered without the wake word
    for packet in sender.talk(pcm):  # in real time, as a client sends them
        receiver.datagram(packet, time.monotonic())
        receiver.tick(time.monotonic())
        await asyncio.sleep(0.02)
    spoke_at = time.monotonic()
    deadline = spoke_at + 120
    while time.monotonic() < deadline and not (call.transcripts and sink.played and sink.current is None):
        receiver.tick(time.monotonic())
        await asyncio.sleep(0.02)
    call.close()

    assert [e.user_id for e in events if e.kind is Event.ENDED] == [USER]
    assert call.transcripts and "capital" in call.transcripts[0][1].lower()
    assert sink.played, "the answer was played"
    assert sink.played[0][0] >= spoke_at - 0.5, "nothing was played before the question ended"
    pcm_out = np.frombuffer(b"".join(frame for _, frame in sink.played), np.int16).reshape(-1, 2)
    heard = (await speech.transcribe(resample(pcm_out.astype(np.float32).mean(axis=1) / 32768, RATE, 16_000))).text
    assert "paris" in heard.lower(), heard
    assert call.latency.turns and call.latency.turns[-1].first_audio is not None
    assert [role for role, _ in store.history("voice:7")] == ["user", "assistant"]
    assert store.history("voice:7")[0][1].startswith("Alice says:"), "the turn is stored, naming its speaker"
    assert list((tmp_path / "debug").glob("*.wav")), "debug_dir gets the utterance"
