"""The whole receive chain on real crypto: DAVE + transport-sealed RTP from simulated members
to utterance events attributed to the right people."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from assistant.voice.receiver import SpeechEvent, VoiceReceiver
from assistant.voice.transport import MODES, TransportCipher
from assistant.voice.turns import FRAME_SECONDS, Event
from tests.davesim.member import SimMember
from tests.davesim.network import DaveNetwork
from tests.davesim.speaker import RtpSender, impair, voice_like
from tests.voice.test_dave import CHANNEL, BotMember

KEY = os.urandom(32)


class Call:
    """A bot receiver in a DAVE call, fed datagrams at 20 ms intervals on a fake clock."""

    def __init__(self, mode: str = MODES[0]) -> None:
        self.net = DaveNetwork(CHANNEL)
        self.bot = BotMember(1)
        self.net.join(self.bot)
        self.cipher = TransportCipher(mode, KEY)
        self.events: list[SpeechEvent] = []
        self.receiver = VoiceReceiver(lambda: self.cipher, self.bot.receiver, self.events.append, silence_s=0.6)
        self.now = 100.0

    def member(self, user_id: int, ssrc: int) -> RtpSender:
        member = SimMember(user_id, CHANNEL, ssrc)
        self.net.join(member)
        self.receiver.map_ssrc(ssrc, user_id)
        return RtpSender(member, ssrc, self.cipher, seed=user_id)

    def play(self, packets: list[bytes], then_silence_s: float = 1.0) -> None:
        for packet in packets:
            self.now += FRAME_SECONDS
            self.receiver.datagram(packet, self.now)
            self.receiver.tick(self.now)
        for _ in range(int(then_silence_s / FRAME_SECONDS)):
            self.now += FRAME_SECONDS
            self.receiver.tick(self.now)

    def utterances(self) -> list[SpeechEvent]:
        return [e for e in self.events if e.kind is Event.ENDED]


@pytest.mark.parametrize("mode", MODES)
def test_two_people_talking_in_turn_are_attributed(mode: str) -> None:
    call = Call(mode)
    alice, bob = call.member(2, 20), call.member(3, 30)
    call.play(alice.talk(voice_like(1.0, 120)))
    call.play(bob.talk(voice_like(1.6, 210, seed=1)))
    call.play(alice.talk(voice_like(0.8, 120, seed=2)))
    said = [(e.user_id, round(e.speech_end - e.speech_start, 1)) for e in call.utterances()]
    assert [u for u, _ in said] == [2, 3, 2]
    for (_, seconds), expected in zip(said, (1.0, 1.6, 0.8)):
        assert abs(seconds - expected) <= 0.15
    audio = call.utterances()[1].audio
    assert audio is not None and abs(len(audio) / 16000 - 1.6) < 0.45  # pre-roll and trailing silence
    assert call.receiver.stats.dave_failed == 0 and call.receiver.stats.undecryptable == 0


def test_tampered_rtcp_and_discovery_packets_are_dropped_without_breaking_the_stream() -> None:
    call = Call()
    alice = call.member(2, 20)
    packets = alice.talk(voice_like(1.0))
    tampered = bytearray(packets[10])
    tampered[-8] ^= 1
    noise = [bytes(tampered), bytes([0x81, 200]) + bytes(26), struct.pack(">HHI", 2, 70, 20) + bytes(66), b"\x00"]
    call.play(packets[:10] + noise + packets[11:])
    assert len(call.utterances()) == 1
    stats = call.receiver.stats
    assert stats.undecryptable == 1 and stats.not_audio == 3
    assert stats.concealed >= 1, "the dropped packet was concealed, not skipped"


def test_member_joining_mid_utterance_keeps_the_utterance_whole() -> None:
    call = Call()
    alice = call.member(2, 20)
    packets = alice.talk(voice_like(1.5))
    call.play(packets[:30], then_silence_s=0)
    call.member(4, 40)  # epoch change while Alice talks
    call.play(packets[30:])
    assert [e.user_id for e in call.utterances()] == [2]
    assert call.receiver.stats.dave_failed == 0
    assert abs(call.utterances()[0].speech_end - call.utterances()[0].speech_start - 1.5) <= 0.15


def test_ten_percent_loss_and_reordering_keeps_the_utterance_whole_and_similar() -> None:
    clean, lossy = Call(), Call()
    speech = voice_like(2.0, 130)
    clean.play(clean.member(2, 20).talk(speech))
    lossy.play(impair(lossy.member(2, 20).talk(speech), loss=0.1, reorder=0.1))
    (a,), (b,) = clean.utterances(), lossy.utterances()
    assert a.audio is not None and b.audio is not None
    assert abs((a.speech_end - a.speech_start) - 2.0) <= 0.06
    # lost packets near the end are concealed by a fading guess, which is not speech: up to 0.25 s short
    assert abs((b.speech_end - b.speech_start) - 2.0) <= 0.25
    assert lossy.receiver.stats.concealed > 5
    n = min(len(a.audio), len(b.audio))
    spectrum = [np.abs(np.fft.rfft(x[:n])) for x in (a.audio, b.audio)]
    assert float(np.corrcoef(*spectrum)[0, 1]) > 0.8


def test_unknown_ssrc_self_and_stop() -> None:
    call = Call()
    stranger = RtpSender(None, 99, call.cipher)
    call.play(stranger.talk(voice_like(0.3)))
    assert call.receiver.stats.unknown_ssrc > 0 and not call.events
    alice = call.member(2, 20)
    call.receiver.forget_user(2)
    call.play(alice.talk(voice_like(0.5)))
    assert not call.utterances(), "a user forgotten on op 13 is no longer attributed"
    call.receiver.map_ssrc(20, 2)
    call.receiver.stop()
    call.play(alice.talk(voice_like(0.5)))
    assert not call.events and not call.receiver.speakers


def test_a_packet_that_makes_decryption_raise_costs_only_that_packet() -> None:
    call = Call()
    alice = call.member(2, 20)
    packets = alice.talk(voice_like(1.0))
    dave = call.receiver.dave
    real_decrypt, calls = dave.decrypt, []

    def flaky(user_id: int, payload: bytes) -> bytes | None:  # a DAVE library bug on one frame
        calls.append(payload)
        if len(calls) == 10:
            raise RuntimeError("decryptor blew up")
        return real_decrypt(user_id, payload)

    dave.decrypt = flaky  # type: ignore[method-assign]
    call.play(packets)
    assert len(call.utterances()) == 1 and call.receiver.stats.packet_errors == 1
