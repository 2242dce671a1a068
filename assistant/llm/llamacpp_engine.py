"""The llama.cpp chat engine: a quantized GGUF served in process, batched, with LoRA hot-swap.

Why: on a CPU llama.cpp decodes the same GGUF 4-6x faster than transformers does its
dequantized copy, which is what lets a larger (better) model fit a voice turn's budget.

How it is shaped, the same contract as `TransformersEngine`:
- one worker thread owns the llama.cpp context; the event loop never runs model code, and
  tokens travel back through `call_soon_threadsafe` into each request's asyncio queue;
- the context holds `max_batch_size` sequences, each with its own KV cells. A request takes
  a free sequence, is prefilled, and joins the next decode step, where one llama.cpp batch
  carries one token of every running sequence (continuous batching);
- a finished sequence keeps its KV cells. The next request whose prompt starts the same way
  (the next turn of a conversation) takes that sequence, cuts it after the common prefix and
  prefills only the rest (prefix reuse, as the transformers engine's `PrefixCache` does);
- LoRA adapters (converted once from peft, see `lora_gguf`) are loaded beside the base and
  applied per decode call: each step runs one llama.cpp batch per adapter among the running
  requests, so requests with different adapters never share a forward pass, and switching
  the active adapter reloads nothing;
- the active adapter is also merged into a copy of the weights in the background; once that is
  loaded its requests run on the copy at the base's speed (`merged_lane`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

import numpy as np

from assistant.errors import AdapterError, GenerationError
from assistant.llm.base import ACTIVE_ADAPTER, GenerationOptions, GenerationStats, Message
from assistant.llm.cpu_weights import weights_to_serve
from assistant.llm.gguf_runtime import GgufModel, set_thread_wait
from assistant.llm.merged_lane import Lanes, MergedLane
from assistant.llm.sampling import choose_token
from assistant.llm.sequence_slots import Slot, pick_slot, tokens_per_sequence
from assistant.llm.turn_probe import normalise, open_user_turn, probability_of, sentence_enders
from assistant.llm.worker import Deliver, WorkerEngine

logger = logging.getLogger(__name__)

_PROBE = GenerationOptions(max_new_tokens=1, adapter=None)
# How long a probe asked just before an answer waits for that answer, to share its prefill: the
# voice dialog's answer follows within milliseconds (tens with memory recall); a lone probe then
# goes alone, this much later.
PROBE_COMPANY_S = 0.25


@dataclass(eq=False)
class _Request:
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


class LlamaCppEngine(WorkerEngine[_Request]):
    """Serve a GGUF model through llama.cpp to many concurrent callers (see module docstring)."""

    supports_adapters = True

    def __init__(self, path: Path, *, max_batch_size: int = 8, context_tokens: int = 2048, threads: int = 0,
                 gpu: bool = False, prefix_reuse: bool = True, thread_wait: str = "brief",
                 max_queued: int = 64, merge_active: bool = True, cpu_weights: str = "q8_0") -> None:
        """At most `max_queued` requests wait beyond a full batch; more are refused with BusyError.
        `merge_active`: serve the active adapter from a merged copy of the weights (module docstring).
        `cpu_weights`: "q8_0" serves a Q8_0 copy of a 4-6 bit file on the CPU (`cpu_weights`)."""
        set_thread_wait(thread_wait)
        self._init_worker(max_batch_size=max_batch_size, max_queued=max_queued)
        self.source = path  # the published file: adapters merge into it (merged_lane)
        self.prefix_reuse = prefix_reuse
        self._adapters: dict[str, tuple[str, Any, Path]] = {}  # name -> (source folder, handle, GGUF)
        self._active: str | None = None
        self.merge_active, self._lanes = merge_active, Lanes()
        self.stats: list[GenerationStats] = []
        self.reused_tokens = 0
        self._enders: Any = None
        start = time.perf_counter()
        self._threads, self._gpu = threads or os.cpu_count() or 1, gpu
        self.path = weights_to_serve(path, cpu_weights, gpu=gpu, threads=self._threads)
        self.model = GgufModel(self.path, n_seq=max_batch_size, ctx_per_seq=tokens_per_sequence(context_tokens),
                               threads=self._threads, gpu=gpu)
        self.load_seconds = time.perf_counter() - start
        self._slots = [Slot(seq, self.model) for seq in range(max_batch_size)]
        self._running: list[_Request] = []
        self._thread = threading.Thread(target=self._run, name="llamacpp-engine", daemon=True)
        self._thread.start()
        logger.info("Loaded %s with llama.cpp in %.1f s", path, self.load_seconds)

    # ----- public API (event-loop side) -----

    def count_tokens(self, messages: list[Message]) -> int:
        return len(self._encode(messages))

    def stream(self, messages: list[Message], options: GenerationOptions | None = None) -> AsyncIterator[str]:
        options = options or GenerationOptions()

        def make(deliver: Deliver) -> _Request:
            rng = np.random.default_rng(options.seed) if options.temperature > 0 else None
            return _Request(prompt=self._encode(messages), options=options, adapter=self._adapter_for(options),
                            deliver=deliver, rng=rng)

        return self._relay(make)

    async def end_of_turn_probability(self, text: str, *, system_prompt: str = "",
                                      answer_follows: bool = False) -> float | None:
        """One prefill on the base model, batched with whatever else runs (see `turn_probe`).

        With `answer_follows` the probe waits (PROBE_COMPANY_S at most) for the next request and
        is prefilled in the same llama.cpp batch: on 2 cores a batch of its ~12 tokens alone cost
        ~120 ms before the voice answer's prefill could start, sharing it ~20 ms (docs/llamacpp.md)."""
        words = normalise(text)
        if not words:
            return None

        def make(deliver: Deliver) -> _Request:
            prompt = self.model.tokenize(open_user_turn(self.model.render, system_prompt, words))
            hold = time.perf_counter() + PROBE_COMPANY_S if answer_follows else 0.0
            return _Request(prompt=prompt, options=_PROBE, adapter=None, deliver=deliver, rng=None, probe=True,
                            hold_until=hold)

        async for value in self._relay(make):
            return float(value)
        return None

    @property
    def active_adapter(self) -> str | None:
        return self._active

    def adapters(self) -> list[str]:
        return sorted(self._adapters)

    @property
    def merged_adapter(self) -> str | None:
        """The adapter whose requests run on merged weights now (None while it merges, or with none active)."""
        lane = self._lanes.current
        return lane.name if lane is not None else None

    async def load_adapter(self, name: str, path: str) -> None:
        """Convert the peft adapter to GGUF (once, cached beside it) and load it next to the base."""
        from assistant.llm.lora_gguf import ensure_gguf_adapter

        if not name:
            raise AdapterError("An adapter needs a name.")
        gguf = await asyncio.to_thread(ensure_gguf_adapter, Path(path), self.model.architecture, self.model.heads)
        await asyncio.wrap_future(self._control(lambda: self._install_adapter(name, path, gguf)))

    def set_active_adapter(self, name: str | None) -> None:
        if name is not None and name not in self._adapters:
            raise AdapterError(f"No adapter named {name!r} is loaded; loaded: {', '.join(self.adapters()) or 'none'}.")
        if name == self._active:
            return
        self._active = name
        if name is None or not self.merge_active:
            self._control(lambda: self._set_lane(None))
        else:
            self._merge_in_background(name, *self._adapters[name][1:])

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._inbox.put(None)
            self._thread.join(timeout=30)
            self._lanes.close()
            self.model.close()

    # ----- helpers -----

    def _encode(self, messages: list[Message]) -> list[int]:
        return self.model.tokenize(self.model.render(messages))

    def _adapter_for(self, options: GenerationOptions) -> Any:
        name = self._active if options.adapter is ACTIVE_ADAPTER else options.adapter
        if name is None:
            return None
        if name not in self._adapters:
            raise AdapterError(f"No adapter named {name!r} is loaded.")
        return self._adapters[str(name)][1]

    def _install_adapter(self, name: str, source: str, gguf: Path) -> None:
        """Worker thread. Reloading a name drops the KV, the handle and the merged copy of the old weights."""
        handle = self.model.load_adapter(gguf)
        old = self._adapters.get(name)
        self._adapters[name] = (source, handle, gguf)
        if old is not None:
            for slot in self._slots:  # KV computed with the old weights is stale
                if slot.adapter is old[1] and not slot.busy:
                    slot.tokens, slot.adapter = [], None
                    slot.model.forget(slot.seq)
            if not any(req.adapter is old[1] for req in self._running):
                self.model.free_adapter(old[1])
            if self._lanes.model_for(old[1]) is not None:
                self._set_lane(None)
            if name == self._active and self.merge_active:
                self._merge_in_background(name, handle, gguf)

    # ----- the merged lane (see merged_lane) -----

    def _merge_in_background(self, name: str, handle: Any, gguf: Path) -> None:
        """Build the merged copy on a thread of its own; until it is in, the run-time LoRA serves."""
        self._lanes.start_merge(self.model, self.source, name, handle, gguf, threads=self._threads, gpu=self._gpu,
                                install=lambda lane: self._control(lambda: self._set_lane(lane)),
                                closed=lambda: self._closed)

    def _set_lane(self, lane: MergedLane | None) -> bool:
        """Worker thread: serve the active adapter from `lane` (None: from the run-time LoRA). A lane
        whose adapter is no longer the active one (switched or reloaded while it merged) is refused."""
        if lane is not None and (lane.name != self._active or self._adapters[lane.name][1] is not lane.adapter):
            return False
        self._lanes.replace(lane)
        if lane is not None:
            self._slots.extend(Slot(seq, lane.model) for seq in range(lane.model.n_seq))
        self._close_idle_lanes()
        return True

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

    def _route(self, req: _Request) -> GgufModel:
        return self._lanes.model_for(req.adapter) or self.model

    def _bind(self, model: GgufModel, adapter: Any) -> None:
        """Apply `adapter` to the base's next decode; a merged copy has it in its weights already."""
        model.use_adapter(adapter if model is self.model else None)

    # ----- worker thread -----

    def _run(self) -> None:
        waiting: list[_Request] = []
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

    def _collect_timeout(self, waiting: list[_Request]) -> float | None:
        """How long to wait for the next request: for ever when idle, until the first held probe's
        time is up when only held probes wait, not at all while there is work."""
        if self._running:
            return 0.0
        if not waiting:
            return None
        return max(0.0, min(req.hold_until for req in waiting) - time.perf_counter())

    def _collect(self, timeout: float | None) -> tuple[list[_Request], bool]:
        """Take queued requests (waiting `timeout` seconds for one, None: until one comes) and run
        control calls in between; a control call does not restart the wait."""
        fresh: list[_Request] = []
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

    def _admit_waiting(self, waiting: list[_Request]) -> None:
        """Admit, in arrival order, the waiting requests whose model has a free sequence, and
        prefill them together: one llama.cpp batch carries every new prompt of one model and
        adapter, so eight requests arriving at once cost one prefill, not eight in a row. Probes
        waiting for their answer (`hold_until`) stay queued until it, or anything else, comes."""
        now = time.perf_counter()
        if all(req.hold_until > now and not req.cancelled for req in waiting):
            return
        admitted: dict[tuple[int, int], list[_Request]] = {}
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

    def _fail(self, req: _Request, exc: Exception) -> None:
        logger.exception("Prefill failed")
        self._release(req, failed=True)
        req.deliver("error", exc if isinstance(exc, GenerationError) else GenerationError(f"Generation failed: {exc}"))

    def _place(self, req: _Request, model: GgufModel) -> None:
        """Give the request a sequence, cut after the prefix it can reuse."""
        limit = self.model.ctx_per_seq - 1
        if len(req.prompt) >= limit:
            raise GenerationError(f"The prompt is {len(req.prompt)} tokens; this model takes at most {limit} "
                                  "here (model.context_tokens). Shorten it.")
        req.started = time.perf_counter()
        slot, reuse = pick_slot(self._slots, model, req.prompt, req.adapter, prefix_reuse=self.prefix_reuse)
        if not model.forget(slot.seq, reuse):
            model.forget(slot.seq)
            reuse = 0
        slot.busy, slot.adapter, slot.tokens = True, req.adapter, req.prompt[:reuse]
        req.slot, req.cached_tokens = slot, reuse
        self.reused_tokens += reuse
        self._running.append(req)

    def _prefill(self, group: list[_Request]) -> None:
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
        groups: dict[tuple[int, int], list[_Request]] = {}
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

    def _take(self, req: _Request, index: int) -> None:
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

    def _release(self, req: _Request, *, failed: bool = False) -> None:
        if req in self._running:
            self._running.remove(req)
        slot = req.slot
        if slot is not None:
            slot.busy, slot.used = False, time.perf_counter()
            if failed:  # what its KV holds is unknown now
                slot.tokens = []
                slot.model.forget(slot.seq)
