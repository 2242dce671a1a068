"""Members and a `DaveGroup` wired together in memory: messages are delivered synchronously,
in order, as a voice gateway would relay them (used by tests that need no websocket)."""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol

from tests.davesim.group import OP_EXECUTE_TRANSITION, DaveGroup, Outgoing


class Member(Protocol):
    user_id: int

    def start(self) -> tuple[int, bytes]: ...

    def recognise(self, *user_ids: int) -> None: ...

    def on_binary(self, op: int, payload: bytes, transition_id: int | None = None) -> list[tuple[int, Any]]: ...

    def execute_transition(self, transition_id: int) -> None: ...


class DaveNetwork:
    def __init__(self, channel_id: int) -> None:
        self.group = DaveGroup(channel_id)
        self.members: dict[int, Member] = {}
        self.log: list[Outgoing] = []

    def join(self, member: Member) -> None:
        for other in self.members.values():
            other.recognise(member.user_id)
            member.recognise(other.user_id)
        self.members[member.user_id] = member
        _, key_package = member.start()
        self._pump(self.group.join(member.user_id) + self.group.key_package(member.user_id, key_package))

    def leave(self, user_id: int) -> None:
        self.members.pop(user_id, None)
        self._pump(self.group.leave(user_id))

    def _pump(self, messages: list[Outgoing]) -> None:
        queue = deque(messages)
        while queue:
            message = queue.popleft()
            self.log.append(message)
            member = self.members.get(message.user_id)
            if member is not None:
                queue.extend(deliver(self.group, member, message))


def deliver(group: DaveGroup, member: Member, message: Outgoing) -> list[Outgoing]:
    """Hand one gateway message to a simulated member; returns what the group answers to its replies."""
    if message.op == OP_EXECUTE_TRANSITION:
        assert isinstance(message.payload, dict)
        member.execute_transition(int(message.payload["transition_id"]))
        return []
    assert isinstance(message.payload, bytes)
    out: list[Outgoing] = []
    for op, reply in member.on_binary(message.op, message.payload, message.transition_id):
        if op == 28:
            out += group.commit_welcome(member.user_id, reply)
        elif op == 23:
            out += group.transition_ready(member.user_id, int(reply["transition_id"]))
    return out
