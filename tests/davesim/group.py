"""The voice gateway's side of a DAVE group, independent of any transport.

Feed it what members send (key packages, commit/welcomes, transition-ready acks, joins and
leaves); it answers with `Outgoing` messages to deliver. The rules are the ones the real
gateway follows and that `dave.Session` checks:

* the group id is the channel id; a new group's proposals use epoch 0 and go to one
  member (the creator), never including that member's own key package;
* once a group exists, every member receives each op 27 (it must hold the proposals to
  process a commit that references them); the first commit back wins, is announced to all
  members (op 29) and its Welcome goes to the added members (op 30);
* when everyone in the new epoch has acknowledged (op 23) the transition is executed (op 22).
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tests.davesim.mls import ExternalSender, group_id_for, proposals_payload, split_commit_welcome

OP_PREPARE_TRANSITION = 21
OP_EXECUTE_TRANSITION = 22
OP_EXTERNAL_SENDER = 25
OP_PROPOSALS = 27
OP_ANNOUNCE_COMMIT = 29
OP_WELCOME = 30


@dataclass(frozen=True)
class Outgoing:
    """One message for one member: binary ops carry bytes, JSON ops a dict."""

    user_id: int
    op: int
    payload: bytes | dict[str, Any]
    transition_id: int | None = None

    def binary_frame(self, seq: int) -> bytes:
        """Server → client binary layout: sequence (2 bytes), opcode, [transition id], payload."""
        assert isinstance(self.payload, bytes)
        head = struct.pack(">HB", seq & 0xFFFF, self.op)
        if self.transition_id is not None:
            head += struct.pack(">H", self.transition_id)
        return head + self.payload


@dataclass
class _Round:
    """One proposals → commit → transition cycle in flight."""

    adds: list[int]
    removes: list[int]
    transition_id: int = 0
    committed: bool = False
    waiting_ready: set[int] = field(default_factory=set)


class DaveGroup:
    def __init__(self, channel_id: int, external_sender: ExternalSender | None = None) -> None:
        self.channel_id = channel_id
        self.group_id = group_id_for(channel_id)
        self.sender = external_sender or ExternalSender()
        self.epoch = 0
        self.leaves: dict[int, int] = {}  # established member → leaf index
        self.key_packages: dict[int, bytes] = {}
        self._queue: deque[tuple[str, int]] = deque()
        self._round: _Round | None = None
        self._next_transition = 1
        self.commits_ignored = 0

    # -- member events --------------------------------------------------------------------
    def join(self, user_id: int) -> list[Outgoing]:
        """A member selected its protocol (op 4 sent): announce the external sender."""
        return [Outgoing(user_id, OP_EXTERNAL_SENDER, self.sender.package())]

    def key_package(self, user_id: int, key_package: bytes) -> list[Outgoing]:
        self.key_packages[user_id] = key_package
        self._queue.append(("add", user_id))
        return self._advance()

    def leave(self, user_id: int) -> list[Outgoing]:
        self.key_packages.pop(user_id, None)
        self._queue = deque(item for item in self._queue if item[1] != user_id)
        if user_id in self.leaves:
            self._queue.append(("remove", user_id))
        return self._advance()

    def commit_welcome(self, user_id: int, data: bytes) -> list[Outgoing]:
        round_ = self._round
        if round_ is None or round_.committed:
            self.commits_ignored += 1
            return []
        commit, welcome = split_commit_welcome(data)
        round_.committed = True
        round_.transition_id = self._next_transition
        self._next_transition += 1
        out: list[Outgoing] = []
        creator = not self.leaves
        if creator:
            self.leaves[user_id] = 0
        for gone in round_.removes:
            self.leaves.pop(gone, None)
        existing = list(self.leaves)
        for added in round_.adds:
            used = set(self.leaves.values())
            self.leaves[added] = next(i for i in range(len(used) + 1) if i not in used)
        self.epoch += 1
        tid = round_.transition_id
        out += [Outgoing(uid, OP_ANNOUNCE_COMMIT, commit, tid) for uid in existing]
        if welcome is not None:
            out += [Outgoing(uid, OP_WELCOME, welcome, tid) for uid in round_.adds]
        round_.waiting_ready = set(self.leaves)
        return out

    def transition_ready(self, user_id: int, transition_id: int) -> list[Outgoing]:
        round_ = self._round
        if round_ is None or not round_.committed or transition_id != round_.transition_id:
            return []
        round_.waiting_ready.discard(user_id)
        if round_.waiting_ready:
            return []
        self._round = None
        done = [Outgoing(uid, OP_EXECUTE_TRANSITION, {"transition_id": transition_id}) for uid in self.leaves]
        return done + self._advance()

    # -- proposals ------------------------------------------------------------------------
    def _advance(self) -> list[Outgoing]:
        if self._round is not None or not self._queue:
            return []
        if not self.leaves:
            return self._create()
        adds = [uid for kind, uid in self._queue if kind == "add" and uid not in self.leaves]
        removes = [uid for kind, uid in self._queue if kind == "remove" and uid in self.leaves]
        self._queue.clear()
        if not adds and not removes:
            return []
        messages = [self.sender.remove(self.group_id, self.epoch, self.leaves[uid]) for uid in removes]
        messages += [self.sender.add(self.group_id, self.epoch, self.key_packages[uid]) for uid in adds]
        self._round = _Round(adds, removes)
        recipients = [uid for uid in self.leaves if uid not in removes]
        if not recipients:  # everyone left: the group is gone
            self._round = None
            self.leaves.clear()
            self.epoch = 0
            return self._advance() if adds else []
        return [Outgoing(uid, OP_PROPOSALS, proposals_payload(messages)) for uid in recipients]

    def _create(self) -> list[Outgoing]:
        """No group yet: the first member waiting creates it by committing the others' Adds."""
        waiting = [uid for kind, uid in self._queue if kind == "add"]
        if len(waiting) < 2:
            return []  # a member alone has nobody to share keys with: wait for a second one
        self._queue.clear()
        creator, adds = waiting[0], waiting[1:]
        messages = [self.sender.add(self.group_id, 0, self.key_packages[uid]) for uid in adds]
        self._round = _Round(adds, [])
        return [Outgoing(creator, OP_PROPOSALS, proposals_payload(messages))]
