"""Writing to Discord: a reply streamed by editing messages, and errors turned into sentences.

Streaming: generation runs in the engine's thread and fills a buffer; this side wakes when
text changed and writes at most one message update per `EditThrottle` slot (1 s, ≤ 5 per
5 s per channel), so fast generation never trips Discord's limits. Text past 2,000
characters continues in a new message. A typing indicator shows until the first words.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

import nextcord

from assistant.discord.policy import EditThrottle, TypingPacer, plan_updates
from assistant.errors import AssistantError

logger = logging.getLogger(__name__)

CURSOR = " ▌"  # shown at the end of a reply while it is still being written
EMPTY_ANSWER = "(I have no answer to that.)"


@dataclass
class StreamResult:
    text: str = ""
    messages: list[Any] = field(default_factory=list)
    deltas: int = 0
    first_token: float | None = None
    done: float | None = None


async def keep_typing(channel: Any, pacer: TypingPacer) -> None:
    """Show "typing…" until cancelled (shared per channel: a busy channel gets one request per period)."""
    with contextlib.suppress(nextcord.HTTPException, AttributeError):
        while True:
            if pacer.due(channel.id):
                await channel.trigger_typing()
            await asyncio.sleep(pacer.every / 4)


async def _consume(deltas: AsyncIterator[str], result: StreamResult, parts: list[str],
                   on_delta: Callable[[str], Awaitable[None] | None] | None,
                   changed: asyncio.Event, finished: asyncio.Event) -> None:
    """Collect the deltas (noting when the first came) and wake the writer after each one."""
    try:
        async for delta in deltas:
            if result.first_token is None:
                result.first_token = time.monotonic()
            parts.append(delta)
            result.deltas += 1
            if on_delta is not None:
                maybe = on_delta(delta)
                if maybe is not None:
                    await maybe
            changed.set()
    finally:
        result.done = time.monotonic()
        finished.set()
        changed.set()


async def _show(channel: Any, text: str, cursor: str, *, result: StreamResult, shown: list[str],
                throttle: EditThrottle, reference: Any) -> bool:
    """Bring the messages up to `text` (edits, then new messages past 2,000 characters); True if one was sent."""
    sent_any = False
    for index, content in plan_updates(shown, text, cursor=cursor):
        async with throttle.pace(channel.id):
            if index < len(result.messages):
                await result.messages[index].edit(content=content)
                shown[index] = content
                continue
            if not result.messages and reference is not None:
                sent = await channel.send(content=content, reference=reference, mention_author=False)
            else:
                sent = await channel.send(content=content)
        result.messages.append(sent)
        shown.append(content)
        sent_any = True
    return sent_any


async def stream_reply(channel: Any, deltas: AsyncIterator[str], *, throttle: EditThrottle, typing: TypingPacer,
                       reference: Any = None, on_delta: Callable[[str], Awaitable[None] | None] | None = None,
                       on_complete: Callable[[str, Any], Awaitable[None]] | None = None) -> StreamResult:
    """Show the streamed answer in `channel` (replying to `reference`) and return what was shown.

    `on_complete(text, first_message)` runs once the text is final and BEFORE the final
    version is shown when a message already exists (so a stored turn is committed before
    a user can see the finished answer and correct it); otherwise right after the first send.
    """
    result = StreamResult()
    parts: list[str] = []
    changed, finished = asyncio.Event(), asyncio.Event()
    typist = asyncio.create_task(keep_typing(channel, typing))
    producer = asyncio.create_task(_consume(deltas, result, parts, on_delta, changed, finished))
    shown: list[str] = []
    completed = False
    try:
        while True:
            await changed.wait()
            changed.clear()
            is_done = finished.is_set()
            text = "".join(parts).strip() or (EMPTY_ANSWER if is_done else "")
            if is_done and on_complete is not None and result.messages and not completed:
                completed = True
                await on_complete(text, result.messages[0])
            if await _show(channel, text, "" if is_done else CURSOR, result=result, shown=shown,
                           throttle=throttle, reference=reference):
                typist.cancel()
            if is_done and not plan_updates(shown, text):
                if on_complete is not None and result.messages and not completed:
                    completed = True
                    await on_complete(text, result.messages[0])
                break
            if not is_done:
                # Let more text arrive before the next write: pacing happens in the throttle.
                await asyncio.sleep(0)
    finally:
        typist.cancel()
        if not producer.done():
            producer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producer  # re-raises a generation error
    result.text = "".join(parts).strip()
    return result


def friendly(exc: BaseException) -> str:
    """The one sentence a user sees for an error (the traceback of unexpected ones is logged)."""
    if isinstance(exc, AssistantError):
        return str(exc)
    if isinstance(exc, nextcord.Forbidden):
        return "Discord did not let me do that here; check my permissions in this channel."
    if isinstance(exc, nextcord.HTTPException):
        return "Discord refused that request; please try again in a moment."
    logger.error("Unexpected error", exc_info=exc)
    return "Sorry, something went wrong on my side. It has been logged; please try again."


async def report(send: Callable[..., Awaitable[Any]], exc: BaseException) -> None:
    """Tell the user about `exc` in one message, never raising."""
    text = friendly(exc)
    try:
        await send(content=text[:2000])
    except Exception:  # noqa: BLE001 - the channel itself may be the problem
        logger.warning("Could not report an error to the user: %s", text)
