"""The llama.cpp engine's worker thread: admission, batched prefill, decode steps, retirement.

Why a module of its own: this is the half of `LlamaCppEngine` that runs on its one worker
thread and owns the llama.cpp contexts (see `llamacpp_engine` for the whole design). The public
half, on the event loop, builds requests and manages adapters; this half turns the inbox into
llama.cpp batches: requests that arrive together are prefilled in one batch per model and
adapter, and every running request advances one token per step.
"""

from __future__ import annotations

import logging
import queue
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from assistant.errors import GenerationError
from assistant.llm.base import GenerationOptions, GenerationStats
from assistant.llm.gguf_runtime import GgufModel
from assistant.llm.merged_lane import Lanes
from assistant.llm.sampling import choose_token
from assistant.llm.sequence_slots import Slot, pick_slot
from assistant.llm.turn_probe import probability_of, sentence_enders
from assistant.llm.worker import Deliver, WorkerEngine

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class LlamaRequest:
    """One answer (or end-of-turn probe) as the worker thread tracks it, from queue to retirement."""

    prompt: list[int]
    options: GenerationOptions
    adapter: Any  # the llama.cpp adapter handle, None for the base model
    deliver: Deliver
    rng: np.random.Generator | None
    submitted: float = field(default_factory=time.perf_counter)
    generated: list[int] = field(default_factory=list)
    raw: bytearray = field(default_factory=bytearray)
    sent_text: str = ""
    next_token: int = -1
    started: float = 0.0
    first_token: float = 0.0
    cancelled: bool = False
    cached_tokens: int = 0
    slot: Slot | None = None  # set at admission; its model is the base or the merged copy
    probe: bool = False  # asks one probability (end_of_turn_probability) at admission, generates nothing
    hold_until: float = 0.0  # a probe waits for its answer until then (answer_follows), to share a prefill

    @property
    def placed(self) -> Slot:
        """The sequence a running request decodes in."""
        assert self.slot is not None, "only admitted requests run"
        return self.slot


class LlamaCppLoop(WorkerEngine[LlamaRequest]):
    """The worker-thread side of `LlamaCppEngine`; the engine sets the attributes declared here."""

    model: GgufModel  # the base model
    prefix_reuse: bool
    stats: list[GenerationStats]
    reused_tokens: int
    _slots: list[Slot]  # the base's sequences, then each merged copy's
    _running: list[LlamaRequest]
    _lanes: Lanes
    _enders: Any

    # ----- which model and adapter a request runs on -----

    def _close_idle_lanes(self) -> None:
        """Free retired merged copies once no request runs on them, and their file (hundreds of MB)."""
        from assistant.llm.lora_merge import remove_merged

        current = self._lanes.current
        for lane in list(self._lanes.retired):
            if any(slot.busy for slot in self._slots if slot.model is lane.model):
                continue
            self._lanes.retired.remove(lane)
            self._slots = [slot for slot in self._slots if slot.model is not lane.model]
            lane.model.close()
            if current is None or current.source.parent != lane.source.parent:
                remove_merged(lane.source.parent)

    def _sentence_enders(self) -> Any:
        """The vocabulary's sentence- and message-ending tokens, found once (a scan of every token)."""
        if self._enders is None:
            model = self.model
            self._enders = sentence_enders(((t, model.piece(t)) for t in range(model.n_vocab)), model.is_eog)
        return self._enders

    def _route(self, req: LlamaRequest) -> GgufModel:
        return self._lanes.model_for(req.adapter) or self.model

    def _bind(self, model: GgufModel, adapter: Any) -> None:
        """Apply `adapter` to the base's next decode; a merged copy has it in its weights already."""
        model.use_adapter(adapter if model is self.model else None)

    # ----- worker thread -----

    def _run(self) -> None:
        waiting: list[LlamaRequest] = []
        while True:
            fresh, stop = self._collect(self._collect_timeout(waiting))
            waiting.extend(fresh)
            self._admit_waiting(waiting)
            if self._running:
                try:
                    self._step()
                except Exception as exc:  # noqa: BLE001
                    logger.exception("Decode step failed")
                    for req in list(self._running):
                        self._release(req, failed=True)
                        req.deliver("error", GenerationError(f"Generation failed: {exc}"))
            if stop:
                for req in self._running + waiting:
                    req.deliver("error", GenerationError("The chat engine is shutting down."))
                self._drain_shutdown()
                return

    def _collect_timeout(self, waiting: list[LlamaRequest]) -> float | None:
        """How long to wait for the next request: for ever when idle, until the first held probe's
        time is up when only held probes wait, not at all while there is work."""
        if self._running:
            return 0.0
        if not waiting:
            return None
        return max(0.0, min(req.hold_until for req in waiting) - time.perf_counter())

    def _collect(self, timeout: float | None) -> tuple[list[LlamaRequest], bool]:
        """Take queued requests (waiting `timeout` seconds for one, None: until one comes) and run
        control calls in between; a control call does not restart the wait."""
        fresh: list[LlamaRequest] = []
        deadline = None if timeout is None else time.perf_counter() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.perf_counter())
            try:
                item = self._inbox.get(block=left != 0.0 and not fresh, timeout=None if fresh else left)
            except queue.Empty:
                return fresh, False
            if item is None:
                return fresh, True
            if isinstance(item, tuple):
                self._run_control(item)
                continue
            fresh.append(item)

    def _admit_waiting(self, waiting: list[LlamaRequest]) -> None:
        """Admit, in arrival order, the waiting requests whose model has a free sequence, and
        prefill them together: one llama.cpp batch carries every new prompt of one model and
        adapter, so eight requests arriving at once cost one prefill, not eight in a row. Probes
        waiting for their answer (`hold_until`) stay queued until it, or anything else, comes."""
        now = time.perf_counter()
        if all(req.hold_until > now and not req.cancelled for req in waiting):
            return
        admitted: dict[tuple[int, int], list[LlamaRequest]] = {}
        for req in list(waiting):
            if req.cancelled:
                waiting.remove(req)
                continue
            model = self._route(req)
            if not any(not slot.busy and slot.model is model for slot in self._slots):
                continue
            waiting.remove(req)
            try:
                self._place(req, model)
            except Exception as exc:  # noqa: BLE001 - reported to that caller, the engine goes on
                self._fail(req, exc)
                continue
            admitted.setdefault((id(model), id(req.adapter)), []).append(req)
        for group in admitted.values():
            try:
                self._prefill(group)
            except Exception as exc:  # noqa: BLE001
                for req in group:
                    self._fail(req, exc)
        if admitted:
            self._retire()

    def _fail(self, req: LlamaRequest, exc: Exception) -> None:
        logger.exception("Prefill failed")
        self._release(req, failed=True)
        req.deliver("error", exc if isinstance(exc, GenerationError) else GenerationError(f"Generation failed: {exc}"))

    def _place(self, req: LlamaRequest, model: GgufModel) -> None:
        """Give the request a sequence, cut after the prefix it can reuse."""
        limit = self.model.ctx_per_seq - 1
        if len(req.prompt) >= limit:
            raise GenerationError(f"The prompt is {len(req.prompt)} tokens; this model takes at most {limit} "
                                  "here (model.context_tokens). Shorten it.")
        req.started = time.perf_counter()
        slot, reuse, source = pick_slot(self._slots, model, req.prompt, req.adapter, prefix_reuse=self.prefix_reuse)
        if source is not None:
            model.copy_sequence(source.seq, slot.seq)
        if not model.forget(slot.seq, reuse):
            model.forget(slot.seq)
            reuse = 0
        slot.busy, slot.adapter, slot.tokens = True, req.adapter, req.prompt[:reuse]
        req.slot, req.cached_tokens = slot, reuse
        self.reused_tokens += reuse
        self._running.append(req)

    def _prefill(self, group: list[LlamaRequest]) -> None:
        """Feed what the group's sequences do not hold yet, up to `n_batch` tokens per llama.cpp
        batch, and take each request's first token once its whole prompt is in."""
        model = group[0].placed.model
        self._bind(model, group[0].adapter)
        rest = {req: req.prompt[len(req.placed.tokens):] for req in group}  # never empty: pick_slot
        while rest:
            rows, taken, budget = [], [], model.n_batch
            for req, tokens in rest.items():
                if budget == 0:
                    break
                chunk = tokens[:budget]
                budget -= len(chunk)
                rows.append((req.placed.seq, chunk, len(req.placed.tokens), len(chunk) == len(tokens)))
                taken.append(req)
            indices = iter(model.decode(rows))
            for req, (_, chunk, _, last) in zip(taken, rows, strict=True):
                req.placed.tokens.extend(chunk)
                if last:
                    del rest[req]
                    self._take(req, next(indices))
                else:
                    rest[req] = rest[req][len(chunk):]

    def _step(self) -> None:
        """One decode step: every running request advances one token, one batch per model and adapter."""
        groups: dict[tuple[int, int], list[LlamaRequest]] = {}
        for req in self._running:
            groups.setdefault((id(req.placed.model), id(req.adapter)), []).append(req)
        for group in groups.values():
            model = group[0].placed.model
            self._bind(model, group[0].adapter)
            indices = model.decode([(req.placed.seq, [req.next_token], len(req.placed.tokens), True)
                                    for req in group])
            for req, index in zip(group, indices, strict=True):
                req.placed.tokens.append(req.next_token)
                self._take(req, index)
        self._retire()
        if self._lanes.retired:
            self._close_idle_lanes()

    def _take(self, req: LlamaRequest, index: int) -> None:
        if req.probe:
            req.deliver("delta", probability_of(req.placed.model.logits(index), self._sentence_enders()))
            return
        token = choose_token(req.placed.model.logits(index), req.generated, req.options, req.rng)
        req.next_token = token
        if self.model.is_eog(token):
            return
        if not req.generated:
            req.first_token = time.perf_counter()
        req.generated.append(token)
        req.raw.extend(self.model.piece(token))
        text = req.raw.decode("utf-8", errors="replace")
        if not text.endswith("\ufffd") and len(text) > len(req.sent_text):
            req.deliver("delta", text[len(req.sent_text):])
            req.sent_text = text

    def _retire(self) -> None:
        """Finish requests that hit a stop condition; their sequences keep their KV for reuse."""
        for req in list(self._running):
            slot = req.placed
            done = (req.probe or self.model.is_eog(req.next_token) or len(req.generated) >= req.options.max_new_tokens
                    or len(slot.tokens) + 1 >= slot.model.ctx_per_seq)
            if not (req.cancelled or done):
                continue
            self._release(req)
            if req.probe:  # its value went out at admission, the only step a probe takes
                req.deliver("done", None)
            if req.cancelled or req.probe:
                continue
            now = time.perf_counter()
            self.stats.append(GenerationStats(
                prompt_tokens=len(req.prompt), completion_tokens=len(req.generated),
                queued_s=req.started - req.submitted, first_token_s=(req.first_token or now) - req.submitted,
                total_s=now - req.submitted, cached_tokens=req.cached_tokens))
            del self.stats[:-1000]
            req.deliver("done", None)

    def _release(self, req: LlamaRequest, *, failed: bool = False) -> None:
        if req in self._running:
            self._running.remove(req)
        slot = req.slot
        if slot is not None:
            slot.busy, slot.used = False, time.perf_counter()
            if failed:  # what its KV holds is unknown now
                slot.tokens = []
                slot.model.forget(slot.seq)
