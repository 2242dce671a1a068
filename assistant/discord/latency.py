"""Per-turn latency of the bot (what `stats` shows): received → recognised → first token →
first audio → done, and generation speed. Kept in memory, newest `maxlen` turns."""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

from assistant.voice.latency import percentile


@dataclass
class TurnTiming:
    """Clock readings (time.monotonic) of one answered message; None = did not happen."""

    received: float = field(default_factory=time.monotonic)
    recognised: float | None = None  # speech turned into text (voice messages only)
    first_token: float | None = None
    first_audio: float | None = None  # first spoken audio handed to the voice channel / file
    done: float | None = None
    tokens: int = 0
    kind: str = "text"  # "text" or "voice"

    @property
    def tokens_per_s(self) -> float | None:
        if self.first_token is None or self.done is None or self.tokens < 2:
            return None
        span = self.done - self.first_token
        return (self.tokens - 1) / span if span > 0 else None


class LatencyLog:
    def __init__(self, maxlen: int = 1000) -> None:
        self.turns: deque[TurnTiming] = deque(maxlen=maxlen)

    def add(self, turn: TurnTiming) -> None:
        self.turns.append(turn)

    def summary(self) -> str:
        """A small fixed-width table: p50 / p95 per stage, in milliseconds."""
        turns = list(self.turns)
        if not turns:
            return "No answered messages yet."

        def stage(end: str, start: str = "received") -> list[float]:
            out = []
            for t in turns:
                a, b = getattr(t, start), getattr(t, end)
                if a is not None and b is not None:
                    out.append((b - a) * 1000.0)
            return out

        def pct(values: list[float], q: float) -> float:
            return percentile(values, q) if values else math.nan

        rows = [("received → recognised", stage("recognised")),
                ("received → first token", stage("first_token")),
                ("received → first audio", stage("first_audio")),
                ("received → done", stage("done"))]
        speeds = [s for t in turns if (s := t.tokens_per_s) is not None]
        lines = [f"Last {len(turns)} answers ({sum(t.kind == 'voice' for t in turns)} by voice).",
                 "```", f"{'stage':<24}{'n':>5}{'p50 ms':>10}{'p95 ms':>10}"]
        for name, values in rows:
            lines.append(f"{name:<24}{len(values):>5}{_fmt(pct(values, 50)):>10}"
                         f"{_fmt(pct(values, 95)):>10}")
        lines.append(f"{'tokens/s':<24}{len(speeds):>5}{_fmt(pct(speeds, 50), 1):>10}"
                     f"{_fmt(pct(speeds, 95), 1):>10}")
        lines.append("```")
        return "\n".join(lines)


def _fmt(value: float, digits: int = 0) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"
