"""The active adapter served from a merged copy of the weights, built off the engine's worker thread.

Why a second model beside the base rather than replacing it: requests for the base model (the
evaluation gate's side-by-side batch, a server without the adapter) and for other adapters keep
running on the base with run-time LoRA, while every request for the active adapter, nearly all
of them once it is activated, decodes at the base's speed (see `lora_merge` for the figures).
The cost is the merged file's pages (~1.3x the base's size) and a second KV cache.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from assistant.errors import AdapterError, ModelNotAvailableError
from assistant.llm.gguf_runtime import GgufModel
from assistant.llm.lora_merge import MergeCancelled, ensure_merged

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class MergedLane:
    """A merged model standing in for one loaded run-time adapter (matched by its llama.cpp handle)."""

    name: str
    adapter: Any
    model: GgufModel
    source: Path  # the adapter's GGUF, whose folder holds the merged file


def build_lane(base: GgufModel, source: Path, name: str, adapter: Any, lora_gguf: Path, *, threads: int,
               gpu: bool, cancelled: Callable[[], bool]) -> MergedLane:
    """Merge (or reuse the cached merge) and load it with the base's context shape. Takes seconds
    to tens of seconds of CPU: run it on a thread of its own, never the worker or the event loop.
    `source` is the published file `base` serves (or its Q8_0 copy, `cpu_weights`): the merge
    starts from the published weights, whose grid `lora_merge` relies on."""
    started = time.perf_counter()
    path = ensure_merged(source, lora_gguf, cancelled, served=base.path)
    model = GgufModel(path, n_seq=base.n_seq, ctx_per_seq=base.ctx_per_seq, threads=threads, gpu=gpu,
                      n_batch=base.n_batch)
    logger.info("Adapter %s merged into a copy of the weights in %.1f s: it now decodes at the base's speed",
                name, time.perf_counter() - started)
    return MergedLane(name, adapter, model, lora_gguf)


def merge_in_background(base: GgufModel, source: Path, name: str, adapter: Any, lora_gguf: Path, *, threads: int,
                        gpu: bool,
                        install: Callable[[MergedLane], Future[bool]], closed: Callable[[], bool]) -> threading.Thread:
    """Build the lane on a thread and hand it to `install` (which runs on the engine's worker and
    answers False for a lane superseded meanwhile); a lane nobody took is closed. A merge that
    fails leaves the adapter on the run-time path, which is slower but answers the same."""
    def work() -> None:
        try:
            lane = build_lane(base, source, name, adapter, lora_gguf, threads=threads, gpu=gpu, cancelled=closed)
        except MergeCancelled:
            return
        except (AdapterError, ModelNotAvailableError) as exc:
            logger.warning("Adapter %s keeps the run-time path (slower decode): %s", name, exc)
            return
        if closed():
            lane.model.close()
            return

        def settle(done: Future[bool]) -> None:
            if done.exception() is not None or not done.result():
                lane.model.close()

        install(lane).add_done_callback(settle)

    thread = threading.Thread(target=work, name="adapter-merge", daemon=True)
    thread.start()
    return thread


class Lanes:
    """What the engine holds beside its base model: the active adapter's merged copy, the copies it
    replaced that requests may still run on, and the merges under way."""

    def __init__(self) -> None:
        self.current: MergedLane | None = None
        self.retired: list[MergedLane] = []
        self._merges: list[threading.Thread] = []

    def start_merge(self, base: GgufModel, source: Path, name: str, adapter: Any, lora_gguf: Path, *, threads: int,
                    gpu: bool,
                    install: Callable[[MergedLane], Future[bool]], closed: Callable[[], bool]) -> None:
        self._merges = [thread for thread in self._merges if thread.is_alive()] + [merge_in_background(
            base, source, name, adapter, lora_gguf, threads=threads, gpu=gpu, install=install, closed=closed)]

    def replace(self, lane: MergedLane | None) -> None:
        if self.current is not None:
            self.retired.append(self.current)
        self.current = lane

    def model_for(self, adapter: Any) -> GgufModel | None:
        """The merged copy standing in for this run-time adapter handle, if it is loaded."""
        lane = self.current
        return lane.model if lane is not None and adapter is not None and adapter is lane.adapter else None

    def close(self) -> None:
        """After the engine's worker stopped: a merge stops between two tensors and removes its partial file."""
        for thread in self._merges:
            thread.join(timeout=10)
        for lane in [*self.retired, *([self.current] if self.current else [])]:
            lane.model.close()
