"""What both local engines share: one worker thread, an inbox, and the bridge back to asyncio.

Why one module: the transformers and llama.cpp engines differ in how they run a model, not in
how a request travels. A request is admitted (or refused when the engine is full), queued for
the worker thread, and its tokens come back through `call_soon_threadsafe` into the caller's
asyncio queue. A request leaves the count of outstanding requests exactly once, whichever side
sees its end first: the caller (done, stopped early) or the worker (finished, failed, or the
caller's event loop is gone, in which case no `finally` of the caller will ever run).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from concurrent.futures import Future
from typing import Any, AsyncIterator, Callable, Generic, TypeVar

from assistant.errors import BusyError, GenerationError
from assistant.llm.base import ChatBackend

Deliver = Callable[[str, Any], None]
"""`deliver(kind, payload)` from the worker: ("delta", text), ("done", None) or ("error", exception)."""


R = TypeVar("R")  # the engine's request type: it has `cancelled: bool` and `deliver: Deliver`
Control = tuple[Callable[[], Any], Future[Any]]


class _Ticket:
    """One admitted request's place in the count; released once, from whichever thread is first."""

    def __init__(self, engine: WorkerEngine[Any]) -> None:
        self._engine, self._released = engine, False

    def release(self) -> None:
        with self._engine._count_lock:
            if not self._released:
                self._released = True
                self._engine._outstanding -= 1


class WorkerEngine(ChatBackend, Generic[R]):
    """Base of the local engines: admission with a bound, the inbox, control calls, the stream bridge.

    Subclasses call `_init_worker` first, run their own loop (`_run`) on `self._thread`, take requests
    and control calls from `self._inbox` (None means shut down; `_run_control` runs a control call)
    and answer through `request.deliver(...)`.
    """

    def _init_worker(self, *, max_batch_size: int, max_queued: int) -> None:
        self.max_batch_size = max_batch_size
        self.max_queued = max_queued  # requests that may wait beyond a full batch; more get BusyError
        self._outstanding = 0  # requests admitted and not finished (running or waiting)
        self._count_lock = threading.Lock()
        self._inbox: queue.Queue[R | Control | None] = queue.Queue()
        self._closed = False

    def _admit_one(self) -> _Ticket:
        with self._count_lock:
            if self._outstanding >= self.max_batch_size + self.max_queued:
                raise BusyError(f"The model is busy with {self._outstanding} requests; please try again in a moment.")
            self._outstanding += 1
        return _Ticket(self)

    async def _relay(self, make_request: Callable[[Deliver], R]) -> AsyncIterator[str]:
        """Admit a request built by `make_request(deliver)`, queue it, and yield its deltas."""
        if self._closed:
            raise GenerationError("The chat engine is shut down.")
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        ticket: _Ticket | None = None
        request: Any = None

        def deliver(kind: str, payload: Any) -> None:
            if kind != "delta" and ticket is not None:
                ticket.release()  # finished or failed: it has left the engine
            try:
                loop.call_soon_threadsafe(events.put_nowait, (kind, payload))
            except RuntimeError:  # the caller's event loop is gone: nobody is listening any more
                if request is not None:
                    request.cancelled = True
                if ticket is not None:
                    ticket.release()

        request = make_request(deliver)  # encodes the prompt: may raise before anything is counted
        ticket = self._admit_one()
        self._inbox.put(request)
        try:
            while True:
                kind, payload = await events.get()
                if kind == "delta":
                    yield payload
                elif kind == "done":
                    return
                else:
                    raise payload
        finally:
            request.cancelled = True  # a consumer that stops early frees its place in the batch
            ticket.release()

    def _control(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run `fn` on the worker thread between decode steps (adapter loads touch the model)."""
        future: Future[Any] = Future()
        self._inbox.put((fn, future))
        return future

    @staticmethod
    def _run_control(item: Control) -> None:
        """Run one control call, unless its caller stopped waiting (a voice turn that moved on
        cancels its end-of-turn probe): setting a result on a cancelled future raises, and that
        killed the worker thread, and with it every later answer."""
        fn, future = item
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - raised in the caller
            future.set_exception(exc)
        else:
            future.set_result(result)

    def _drain_shutdown(self) -> None:
        """Fail whatever is still queued when the engine shuts down."""
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, tuple):
                if item[1].set_running_or_notify_cancel():
                    item[1].set_exception(GenerationError("The chat engine is shutting down."))
            elif item is not None:
                request: Any = item
                request.deliver("error", GenerationError("The chat engine is shutting down."))
