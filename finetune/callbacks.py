"""Trainer callbacks that turn transformers' logs into our JSON-lines progress events."""

from __future__ import annotations

import time
from typing import Any

from transformers import TrainerCallback

from finetune.events import EventWriter, ProgressEvent


class TokenCounter:
    """Counts real (non-padding) tokens as the collator builds batches, for tokens/s."""

    def __init__(self) -> None:
        self.tokens = 0

    def add(self, n: int) -> None:
        self.tokens += n


class EventsCallback(TrainerCallback):
    """Emits start/step/checkpoint events from the main process only (one stream under DDP)."""

    def __init__(self, writer: EventWriter | None, counter: TokenCounter, *, world_size: int = 1) -> None:
        self.writer = writer
        self.counter = counter
        self.world_size = world_size
        self._t0 = 0.0
        self._start_step = 0
        self._last_time = 0.0
        self._last_tokens = 0
        self.history: list[dict[str, float]] = []

    def _emit(self, state: Any, event: ProgressEvent) -> None:
        if self.writer is not None and state.is_world_process_zero:
            self.writer.emit(event)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._t0 = self._last_time = time.perf_counter()
        self._start_step = state.global_step
        self._last_tokens = self.counter.tokens
        self._emit(state, ProgressEvent("start", step=state.global_step, total_steps=state.max_steps,
                                        message="resumed" if state.global_step else "started"))

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
               **kwargs: Any) -> None:
        if not logs or "loss" not in logs:
            return
        now = time.perf_counter()
        tokens = (self.counter.tokens - self._last_tokens) * self.world_size
        rate = tokens / (now - self._last_time) if now > self._last_time and tokens else None
        self._last_time, self._last_tokens = now, self.counter.tokens
        done = state.global_step - self._start_step
        eta = (now - self._t0) / done * (state.max_steps - state.global_step) if done > 0 else None
        self.history.append({"step": state.global_step, "loss": float(logs["loss"])})
        self._emit(state, ProgressEvent("step", step=state.global_step, total_steps=state.max_steps,
                                        loss=float(logs["loss"]), lr=float(logs.get("learning_rate", 0.0)),
                                        tokens_per_s=rate, eta_s=eta, epoch=state.epoch))

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._emit(state, ProgressEvent("checkpoint", step=state.global_step, total_steps=state.max_steps,
                                        message=f"checkpoint-{state.global_step}"))
