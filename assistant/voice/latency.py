"""Latency of voice turns, measured from the real end of the user's speech (so the silence
the VAD waits for counts): → transcript → first token → first audio packet sent."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

STAGES = ("turn_ended", "recognised", "first_token", "first_audio")


@dataclass
class VoiceTurnTiming:
    """Monotonic clock readings of one voice turn; None = not reached (yet)."""

    user_id: int
    speech_end: float
    turn_ended: float | None = None  # the utterance was judged over (turn model or silence)
    recognised: float | None = None
    first_token: float | None = None
    first_audio: float | None = None
    speculative: bool = False  # the transcript came from recognition started during the silence
    ended_by_model: bool = False  # the turn model ended the turn (not the silence timer)
    turn_probability: float | None = None  # the turn model's P(complete) at the check
    text_probability: float | None = None  # the chat model's P(the words are a finished message)

    def since_end(self, stage: str) -> float | None:
        value = getattr(self, stage)
        return None if value is None else value - self.speech_end


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


class VoiceLatencyLog:
    def __init__(self, maxlen: int = 500) -> None:
        self.turns: deque[VoiceTurnTiming] = deque(maxlen=maxlen)

    def add(self, turn: VoiceTurnTiming) -> None:
        self.turns.append(turn)

    def summary(self) -> dict[str, dict[str, float]]:
        """{stage: {"p50": s, "p95": s, "n": count}} for stages reached at least once."""
        out: dict[str, dict[str, float]] = {}
        for stage in STAGES:
            values = [v for t in self.turns if (v := t.since_end(stage)) is not None]
            if values:
                out[stage] = {"p50": percentile(values, 50), "p95": percentile(values, 95), "n": len(values)}
        return out

    def format(self) -> str:
        """One line per stage, for the bot's `stats` command."""
        summary = self.summary()
        if not summary:
            return "voice: no answered voice turns yet"
        lines = [f"voice end of speech → {stage.replace('_', ' ')}: p50 {s['p50'] * 1000:.0f} ms, "
                 f"p95 {s['p95'] * 1000:.0f} ms (n={int(s['n'])})" for stage, s in summary.items()]
        by_model = sum(t.ended_by_model for t in self.turns)
        if by_model:
            lines.append(f"voice turns ended by the turn model: {by_model}/{len(self.turns)}")
        return "\n".join(lines)
