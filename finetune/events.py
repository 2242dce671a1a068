"""The progress contract between a training process and whoever watches it: JSON lines.

Why a file rather than a pipe: the bot may restart while a job runs; a file of events in the
run folder can be re-read from the start or tailed from an offset by any later process, and a
terminal user can `tail -f` it. One event per line, written whole and flushed, so a reader
never sees half an event (it ignores a trailing line without a newline until it is complete).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, IO

EVENTS_FILE = "events.jsonl"
KINDS = ("start", "step", "checkpoint", "done", "error", "state")


@dataclass(frozen=True)
class ProgressEvent:
    """One event. `kind` is one of KINDS; a `done`/`error` event is the last one of a run.

    step/total_steps count optimizer steps; tokens_per_s counts real (non-padding) tokens;
    eta_s is the estimated seconds left; `data` carries extras (adapter path, metrics).
    """

    kind: str
    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    lr: float | None = None
    tokens_per_s: float | None = None
    eta_s: float | None = None
    epoch: float | None = None
    message: str = ""
    time: float = field(default_factory=time.time)
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> "ProgressEvent":
        raw = json.loads(line)
        known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        return cls(**known)

    @property
    def final(self) -> bool:
        return self.kind in ("done", "error")


class EventWriter:
    """Appends events to `path` (and optionally echoes them to a stream such as stdout)."""

    def __init__(self, path: Path, echo: IO[str] | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._handle = path.open("a", encoding="utf-8")
        self._echo = echo

    def emit(self, event: ProgressEvent) -> None:
        line = event.to_json() + "\n"
        self._handle.write(line)
        self._handle.flush()
        if self._echo is not None:
            self._echo.write(line)
            self._echo.flush()

    def close(self) -> None:
        self._handle.close()


def read_events(path: Path, offset: int = 0) -> tuple[list[ProgressEvent], int]:
    """Complete events after byte `offset`, and the offset to continue from."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            chunk = handle.read()
    except FileNotFoundError:
        return [], offset
    end = chunk.rfind(b"\n") + 1
    events = []
    for line in chunk[:end].splitlines():
        if line.strip():
            try:
                events.append(ProgressEvent.from_json(line.decode("utf-8")))
            except (ValueError, TypeError):
                continue  # a foreign line in the file is not our business
    return events, offset + end


def format_progress(event: ProgressEvent, width: int = 20) -> str:
    """A one-line text progress bar (what the bot edits into its status message)."""
    total = max(event.total_steps, 1)
    filled = min(width, round(width * event.step / total))
    bar = "█" * filled + "░" * (width - filled)
    parts = [f"[{bar}] step {event.step}/{event.total_steps}"]
    if event.loss is not None:
        parts.append(f"loss {event.loss:.4f}")
    if event.tokens_per_s is not None:
        parts.append(f"{event.tokens_per_s:.0f} tok/s")
    if event.eta_s is not None:
        parts.append(f"ETA {int(event.eta_s) // 60}:{int(event.eta_s) % 60:02d}")
    return " · ".join(parts)
