"""DAVE receive against the in-memory harness: real MLS, real frame encryption."""

from __future__ import annotations

import pytest

from assistant.voice.e2ee import DaveReceiver
from tests.davesim.member import SimMember
from tests.davesim.mls import ExternalSender, read_vec, split_commit_welcome, varint
from tests.davesim.network import DaveNetwork

CHANNEL = 555000111222333
FRAME = b"\xfc" + bytes(range(1, 80))


class BotMember(SimMember):
    """The bot: a member whose receiver follows every epoch change, as our VoiceClient does."""

    def __init__(self, user_id: int) -> None:
        super().__init__(user_id, CHANNEL, ssrc=1)
        self.receiver = DaveReceiver(lambda: self.session)

    def renew_decryptors(self) -> None:
        self.receiver.renew()


def speak(member: SimMember, n: int = 3) -> list[bytes]:
    return [member.encrypt(FRAME + bytes([i])) for i in range(n)]


def heard(bot: BotMember, sender: SimMember, frames: list[bytes]) -> list[bytes | None]:
    return [bot.receiver.decrypt(sender.user_id, f) for f in frames]


def expected(n: int = 3) -> list[bytes]:
    return [FRAME + bytes([i]) for i in range(n)]


def call_with_alice() -> tuple[DaveNetwork, BotMember, SimMember]:
    net = DaveNetwork(CHANNEL)
    bot, alice = BotMember(1), SimMember(2, CHANNEL, 20)
    net.join(bot)
    net.join(alice)
    return net, bot, alice


def test_two_speakers_are_decrypted_and_told_apart() -> None:
    net = DaveNetwork(CHANNEL)
    bot, alice, bob = BotMember(1), SimMember(2, CHANNEL, 20), SimMember(3, CHANNEL, 30)
    for member in (bot, alice, bob):
        net.join(member)
    assert all(m.can_encrypt for m in (bot, alice, bob)), "every member holds a key after its transition"
    assert not (bot.failures or alice.failures or bob.failures)
    assert heard(bot, alice, speak(alice)) == expected()
    assert heard(bot, bob, speak(bob)) == expected()
    # Alice's frames do not decrypt as Bob's: attribution rests on the right key
    assert bot.receiver.decrypt(bob.user_id, alice.encrypt(FRAME)) is None
    assert bot.receiver.failed == 1


def test_member_joining_mid_call_changes_epoch_and_audio_keeps_flowing() -> None:
    net, bot, alice = call_with_alice()
    assert heard(bot, alice, speak(alice)) == expected()
    epoch = net.group.epoch
    carol = SimMember(4, CHANNEL, 40)
    net.join(carol)
    assert net.group.epoch == epoch + 1
    assert heard(bot, alice, speak(alice)) == expected(), "the decryptor followed Alice to the new epoch"
    assert heard(bot, carol, speak(carol)) == expected()
    assert bot.receiver.failed == 0


def test_back_to_back_changes_and_a_member_leaving() -> None:
    net = DaveNetwork(CHANNEL)
    bot, alice, bob, carol = BotMember(1), SimMember(2, CHANNEL, 20), SimMember(3, CHANNEL, 30), SimMember(4, CHANNEL, 40)
    for member in (alice, bot, bob, carol):  # the bot joins second: it is added by Alice's commit
        net.join(member)
    assert heard(bot, alice, speak(alice, 1)) == expected(1)
    in_flight = speak(alice)  # sent just before Bob leaves, arriving after the commit
    net.leave(bob.user_id)
    assert bob.user_id not in net.group.leaves
    assert heard(bot, alice, in_flight) == expected(), "frames of the previous epoch still decrypt"
    assert heard(bot, carol, speak(carol)) == expected()
    assert not (bot.failures or alice.failures or carol.failures)


def test_speaker_outside_the_group_is_passed_through() -> None:
    bot = BotMember(1)
    bot.start()
    assert bot.receiver.decrypt(9, FRAME) == FRAME  # no group yet: transport encryption only
    assert bot.receiver.passed_through == 1


def test_tampered_dave_frame_is_dropped_and_the_next_one_decrypts() -> None:
    _, bot, alice = call_with_alice()
    good = alice.encrypt(FRAME)
    bad = bytearray(alice.encrypt(FRAME))
    bad[3] ^= 0x40
    assert bot.receiver.decrypt(alice.user_id, bytes(bad)) is None
    assert bot.receiver.decrypt(alice.user_id, good) == FRAME
    assert bot.receiver.decrypt(alice.user_id, b"\xf8\xff\xfe") == b"\xf8\xff\xfe"


def test_mls_vectors_and_external_sender_package() -> None:
    for n in (0, 63, 64, 16383, 16384, 2**30 - 1):
        data = bytes(min(n, 70000))
        if n == len(data):
            assert read_vec(varint(n) + data, 0) == (data, len(varint(n)) + n)
    package = ExternalSender(b"gw").package()
    key, offset = read_vec(package, 0)
    assert len(key) == 65 and key[0] == 4 and package[offset:offset + 2] == b"\x00\x01"
    assert read_vec(package, offset + 2)[0] == b"gw"
    with pytest.raises(ValueError):
        varint(2**30)
    assert split_commit_welcome(b"\x00\x01\x00\x01abc") == (b"\x00\x01\x00\x01abc", None)
