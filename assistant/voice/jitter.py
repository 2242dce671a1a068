"""A small per-speaker jitter buffer: reorder by RTP sequence, drop duplicates and late
packets, and turn gaps into explicit losses for packet-loss concealment.

It holds at most `depth` packets waiting for a missing one; when more arrive, the gap is
declared lost. Sequence numbers wrap at 2**16, so comparisons use the signed distance.
"""

from __future__ import annotations

from dataclasses import dataclass

RESTART_BEHIND = 1000  # packets (20 s): a sequence this far behind starts a new stream
MAX_CONCEALED = 5  # longer gaps are a pause or an outage, not loss worth inventing audio for


def seq_distance(a: int, b: int) -> int:
    """b - a on the 16-bit sequence circle, in [-32768, 32767]."""
    return ((b - a + 0x8000) & 0xFFFF) - 0x8000


@dataclass
class JitterStats:
    received: int = 0
    duplicates: int = 0
    late: int = 0
    lost: int = 0
    concealed: int = 0


class JitterBuffer:
    def __init__(self, depth: int = 3, capacity: int = 50) -> None:
        self.depth, self.capacity = depth, capacity
        self._next: int | None = None
        self._held: dict[int, bytes] = {}
        self.stats = JitterStats()

    def push(self, sequence: int, payload: bytes) -> list[bytes | None]:
        """Store a packet; returns what is now ready in order (None = one concealable lost frame)."""
        self.stats.received += 1
        distance = 0 if self._next is None else seq_distance(self._next, sequence)
        if distance <= -RESTART_BEHIND:  # 20 s behind is no late packet: the sender restarted its stream
            distance = self.capacity
        if distance < 0:
            self.stats.late += 1
            return []
        if sequence in self._held:
            self.stats.duplicates += 1
            return []
        if distance >= self.capacity:  # a jump far away (a new stream after a reset): restart there
            out = self.flush()
            self._next = None
            self._held[sequence] = payload
            return out + self._drain(force=False)
        self._held[sequence] = payload
        return self._drain(force=False)

    def flush(self) -> list[bytes | None]:
        """Everything held, in order, gaps concealed (the speaker paused or left)."""
        out = self._drain(force=True)
        self._held.clear()
        return out

    def _drain(self, *, force: bool) -> list[bytes | None]:
        out: list[bytes | None] = []
        if self._next is None:  # start of a stream: wait for `depth` packets to find its first
            if not self._held or (not force and len(self._held) < self.depth):
                return out
            anchor = next(iter(self._held))
            self._next = min(self._held, key=lambda s: seq_distance(anchor, s))
        while self._held and self._next is not None:
            payload = self._held.pop(self._next, None)
            if payload is not None:
                out.append(payload)
                self._next = (self._next + 1) & 0xFFFF
                continue
            if not force and len(self._held) < self.depth:
                break
            gap = min(seq_distance(self._next, s) for s in self._held)
            self.stats.lost += gap
            concealed = min(gap, MAX_CONCEALED)
            self.stats.concealed += concealed
            out.extend([None] * concealed)
            self._next = (self._next + gap) & 0xFFFF
        return out
