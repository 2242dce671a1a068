"""From UDP datagrams to per-speaker utterance events, independent of any Discord library.

Per datagram: classify (RTCP and IP discovery dropped) → transport-decrypt → SSRC to user
(from voice op 5) → DAVE-decrypt → jitter buffer → Opus decode, concealing lost frames →
16 kHz mono → VAD → utterance segmentation. Every failure is counted and the packet dropped;
nothing raises into the socket reader. Raw audio lives only in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from assistant.voice.e2ee import DaveReceiver
from assistant.voice.jitter import JitterBuffer
from assistant.voice.opus import OpusDecoder, OpusError
from assistant.voice.resample import Downsampler
from assistant.voice.rtp import is_audio_rtp
from assistant.voice.transport import TransportCipher
from assistant.config import VoiceConfig
from assistant.voice.turns import FRAME_SECONDS, Event, SegmentEvent, UtteranceSegmenter
from assistant.voice.vad import QuietTailGate, make_vad

logger = logging.getLogger(__name__)

PRE_ROLL_S = 0.3  # audio kept from before the speech onset: the VAD needs 60 ms to decide
MAX_UTTERANCE_S = 30.0  # a monologue is cut here and treated as one utterance
IDLE_FLUSH_S = 0.1  # a speaker silent this long has their held packets flushed


@dataclass(frozen=True)
class SpeechEvent:
    """One turn-taking event for one speaker. `audio` (16 kHz mono float32) comes with
    PAUSED (speculative recognition) and ENDED (the utterance)."""

    user_id: int
    kind: Event
    at: float
    speech_start: float
    speech_end: float
    audio: np.ndarray | None = field(default=None, repr=False)
    by_model: bool = False  # ENDED because the turn model judged the turn complete


@dataclass(frozen=True)
class ListenSettings:
    """How each speaker's audio is cut into utterances (from `VoiceConfig`, see `from_config`)."""

    silence_s: float
    speculative_s: float
    vad: str
    aggressiveness: int
    end_of_speech_db: float
    vad_model: Path | None = None
    end_of_turn: str = "silence"
    turn_check_s: float = 0.2
    max_pause_s: float = 1.6

    @classmethod
    def from_config(cls, voice: VoiceConfig, vad_model: Path | None = None) -> ListenSettings:
        silence_s = voice.silence_ms / 1000
        speculative = voice.speculate_after_ms / 1000 if voice.speculate_after_ms else float("inf")
        return cls(silence_s=silence_s, speculative_s=speculative, vad=voice.vad,
                   aggressiveness=voice.vad_aggressiveness, end_of_speech_db=voice.end_of_speech_db,
                   vad_model=vad_model, end_of_turn=voice.end_of_turn, turn_check_s=voice.turn_check_ms / 1000,
                   max_pause_s=voice.max_pause_ms / 1000)


@dataclass
class ReceiveStats:
    datagrams: int = 0
    not_audio: int = 0  # RTCP, IP discovery, garbage
    undecryptable: int = 0  # transport authentication failed
    unknown_ssrc: int = 0  # audio before its SPEAKING (op 5) arrived
    dave_failed: int = 0
    decode_errors: int = 0
    frames: int = 0
    concealed: int = 0
    packet_errors: int = 0  # a packet whose decryption, decoding or VAD raised: skipped, the rest go on


class SpeakerAudio:
    """One speaker's audio chain, from Opus frames to segmenter events."""

    def __init__(self, user_id: int, settings: ListenSettings) -> None:
        self.user_id = user_id
        self.jitter = JitterBuffer()
        self.decoder = OpusDecoder()
        self.downsample = Downsampler()
        self.vad = make_vad(settings.vad, settings.aggressiveness, settings.vad_model)
        self.tail_gate = QuietTailGate(settings.end_of_speech_db)
        self.segmenter = UtteranceSegmenter(settings.silence_s, settings.speculative_s,
                                            end_of_turn=settings.end_of_turn, turn_check_s=settings.turn_check_s,
                                            max_pause_s=settings.max_pause_s)
        self._pre_roll: list[np.ndarray] = []
        self._utterance: list[np.ndarray] = []
        self._frame_end = 0.0  # when the newest buffered frame ends
        self.last_packet = 0.0

    def frames(self, payloads: list[bytes | None], now: float, stats: ReceiveStats) -> list[SpeechEvent]:
        events: list[SpeechEvent] = []
        count = len(payloads)
        for i, payload in enumerate(payloads):
            try:
                pcm = self.decoder.decode(payload)
            except OpusError:
                stats.decode_errors += 1
                continue
            stats.frames += 1
            stats.concealed += payload is None
            at = now - (count - 1 - i) * FRAME_SECONDS
            for frame, speech in self.vad.frames(self.downsample(pcm)):
                events += self._frame(frame, speech, at)
        return events

    def _frame(self, frame: np.ndarray, speech: bool, at: float) -> list[SpeechEvent]:
        speech = self.tail_gate(frame, speech, self.segmenter.speaking)
        self._frame_end = at + FRAME_SECONDS
        if self.segmenter.speaking:
            self._utterance.append(frame)
        else:
            self._pre_roll.append(frame)
            del self._pre_roll[: max(0, len(self._pre_roll) - int(PRE_ROLL_S / FRAME_SECONDS))]
        events = self._wrap(self.segmenter.frame(speech, at))
        if self.segmenter.speaking and len(self._utterance) * FRAME_SECONDS >= MAX_UTTERANCE_S:
            events += self._wrap(self.segmenter.tick(at + self.segmenter.silence_s + 1.0))
        return events

    def tick(self, now: float) -> list[SpeechEvent]:
        return self._wrap(self.segmenter.tick(now))

    def end_now(self, speech_end: float, now: float) -> list[SpeechEvent]:
        return self._wrap(self.segmenter.end_now(speech_end, now))

    def _wrap(self, raw: list[SegmentEvent]) -> list[SpeechEvent]:
        events = []
        for e in raw:
            audio = None
            if e.kind is Event.STARTED:
                self._utterance, self._pre_roll = self._pre_roll, []
            elif e.kind in (Event.PAUSED, Event.ENDED, Event.CHECK):
                audio = np.concatenate(self._utterance) if self._utterance else np.zeros(0, np.float32)
                if e.kind is Event.CHECK and e.at > self._frame_end:  # clients send nothing while silent
                    audio = np.concatenate([audio, np.zeros(int((e.at - self._frame_end) * 16_000), np.float32)])
                if e.kind is Event.ENDED:
                    self._utterance = []
            events.append(SpeechEvent(self.user_id, e.kind, e.at, e.speech_start, e.speech_end, audio,
                                      e.by_model))
        return events


class VoiceReceiver:
    """Feed it datagrams and ticks; it calls `on_event` with each speaker's SpeechEvents.

    `cipher` returns the connection's current TransportCipher (None before the session
    description); `dave` decrypts end-to-end frames. SSRCs are mapped with `map_ssrc`.
    """

    def __init__(self, cipher: Callable[[], TransportCipher | None], dave: DaveReceiver,
                 on_event: Callable[[SpeechEvent], None], *, settings: ListenSettings | None = None,
                 silence_s: float = 0.6, speculative_s: float = 0.2, vad: str = "webrtc", aggressiveness: int = 2,
                 end_of_speech_db: float = 40.0, vad_model: Path | None = None,
                 ignore_user: int | None = None) -> None:
        """`settings` (what the bot passes, from `VoiceConfig`), or the loose keywords (tests)."""
        self._cipher, self.dave, self.on_event = cipher, dave, on_event
        self.settings = settings or ListenSettings(silence_s, speculative_s, vad, aggressiveness, end_of_speech_db,
                                                   vad_model)
        s = self.settings
        make_vad(s.vad, s.aggressiveness, s.vad_model)  # a bad setting fails at start, not on the first packet
        self.ignore_user = ignore_user
        self.ssrc_users: dict[int, int] = {}
        self.speakers: dict[int, SpeakerAudio] = {}
        self.stats = ReceiveStats()
        self.listening = True

    def map_ssrc(self, ssrc: int, user_id: int) -> None:
        self.ssrc_users[ssrc] = user_id

    def forget_user(self, user_id: int) -> None:
        """The user left (voice op 13): drop their SSRCs, audio chain and decryptor."""
        for ssrc in [s for s, u in self.ssrc_users.items() if u == user_id]:
            del self.ssrc_users[ssrc]
        self.speakers.pop(user_id, None)
        self.dave.forget(user_id)

    def datagram(self, data: bytes, now: float) -> None:
        """One packet; whatever it makes fail (DAVE, Opus, the VAD) costs this packet only, never the
        rest of the batch being read from the socket."""
        try:
            self._datagram(data, now)
        except Exception:  # noqa: BLE001 - counted and logged; the receive path must go on
            self.stats.packet_errors += 1
            logger.debug("voice packet dropped", exc_info=True)

    def _datagram(self, data: bytes, now: float) -> None:
        if not self.listening:
            return
        self.stats.datagrams += 1
        cipher = self._cipher()
        if not is_audio_rtp(data) or cipher is None:
            self.stats.not_audio += 1
            return
        opened = cipher.open(data)
        if opened is None:
            self.stats.undecryptable += 1
            return
        header, payload = opened
        user_id = self.ssrc_users.get(header.ssrc)
        if user_id is None:
            self.stats.unknown_ssrc += 1
            return
        if user_id == self.ignore_user:
            return
        frame = self.dave.decrypt(user_id, payload)
        if frame is None:
            self.stats.dave_failed += 1
            return
        speaker = self.speakers.get(user_id)
        if speaker is None:
            speaker = self.speakers[user_id] = SpeakerAudio(user_id, self.settings)
        speaker.last_packet = now
        self._emit(speaker.frames(speaker.jitter.push(header.sequence, frame), now, self.stats))

    def tick(self, now: float) -> None:
        """Call every ~20 ms: flushes speakers who went quiet and ends their utterances."""
        for speaker in list(self.speakers.values()):
            try:
                if now - speaker.last_packet >= IDLE_FLUSH_S:
                    held = speaker.jitter.flush()
                    if held:
                        self._emit(speaker.frames(held, speaker.last_packet, self.stats))
                self._emit(speaker.tick(now))
            except Exception:  # noqa: BLE001 - one speaker's failure must not stop the others' ticks
                self.stats.packet_errors += 1
                logger.debug("voice tick failed for %s", speaker.user_id, exc_info=True)

    def end_now(self, user_id: int, speech_end: float, now: float) -> None:
        """The turn model says `user_id`'s pause after `speech_end` ends their turn: end it now."""
        speaker = self.speakers.get(user_id)
        if speaker is not None and self.listening:
            self._emit(speaker.end_now(speech_end, now))

    def _emit(self, events: list[SpeechEvent]) -> None:
        for event in events:
            try:
                self.on_event(event)
            except Exception:  # a consumer bug must not stop the receive path
                logger.exception("voice event handler failed for %s", event.kind)

    def stop(self) -> None:
        """Stop listening at once and drop every buffered sample (privacy: `leave`)."""
        self.listening = False
        self.speakers.clear()
        self.ssrc_users.clear()
