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

This module is the event-loop side (requests, adapters); the worker thread's side is
`llamacpp_loop`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator

import numpy as np

from assistant.errors import AdapterError
from assistant.llm.base import ACTIVE_ADAPTER, GenerationOptions, GenerationStats, Message
from assistant.llm.cpu_weights import weights_to_serve
from assistant.llm.gguf_runtime import GgufModel, set_thread_wait
from assistant.llm.llamacpp_loop import LlamaCppLoop, LlamaRequest
from assistant.llm.merged_lane import Lanes, MergedLane
from assistant.llm.sequence_slots import Slot, tokens_per_sequence
from assistant.llm.turn_probe import normalise, open_user_turn
from assistant.llm.worker import Deliver

logger = logging.getLogger(__name__)

_PROBE = GenerationOptions(max_new_tokens=1, adapter=None)
# How long a probe asked just before an answer waits for that answer, to share its prefill: the
# voice dialog's answer follows within milliseconds (tens with memory recall); a lone probe then
# goes alone, this much later.
PROBE_COMPANY_S = 0.25


class LlamaCppEngine(LlamaCppLoop):
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
        self._running: list[LlamaRequest] = []
        self._thread = threading.Thread(target=self._run, name="llamacpp-engine", daemon=True)
        self._thread.start()
        logger.info("Loaded %s with llama.cpp in %.1f s", path, self.load_seconds)

    # ----- public API (event-loop side) -----

    def count_tokens(self, messages: list[Message]) -> int:
        return len(self._encode(messages))

    def stream(self, messages: list[Message], options: GenerationOptions | None = None) -> AsyncIterator[str]:
        options = options or GenerationOptions()

        def make(deliver: Deliver) -> LlamaRequest:
            rng = np.random.default_rng(options.seed) if options.temperature > 0 else None
            return LlamaRequest(prompt=self._encode(messages), options=options, adapter=self._adapter_for(options),
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

        def make(deliver: Deliver) -> LlamaRequest:
            prompt = self.model.tokenize(open_user_turn(self.model.render, system_prompt, words))
            hold = time.perf_counter() + PROBE_COMPANY_S if answer_follows else 0.0
            return LlamaRequest(prompt=prompt, options=_PROBE, adapter=None, deliver=deliver, rng=None, probe=True,
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
