"""Attachments from Discord: refused on size and type before any byte is fetched, then read
with a hard cap while streaming (a lying `size` field cannot make us hold more)."""

from __future__ import annotations

import logging
from pathlib import PurePosixPath

import aiohttp

from assistant.errors import AudioError, DatasetError

logger = logging.getLogger(__name__)

AUDIO_TYPES = ("audio/",)
AUDIO_SUFFIXES = (".ogg", ".opus", ".oga", ".wav", ".mp3", ".m4a", ".flac", ".webm")
DATA_TYPES = ("application/json", "text/plain", "application/x-ndjson", "application/jsonl",
              "application/octet-stream", "text/csv")
DATA_SUFFIXES = (".json", ".jsonl", ".ndjson", ".txt", ".csv")
CHUNK = 64 * 1024


def is_audio(filename: str, content_type: str | None) -> bool:
    base = (content_type or "").split(";")[0].strip().lower()
    return base.startswith(AUDIO_TYPES) or PurePosixPath(filename.lower()).suffix in AUDIO_SUFFIXES


def check_attachment(filename: str, content_type: str | None, size: int, *, max_bytes: int, kind: str) -> None:
    """Raise (AudioError / DatasetError) unless an attachment of `kind` ("audio"|"data") is acceptable."""
    error = AudioError if kind == "audio" else DatasetError
    if size > max_bytes:
        raise error(f"{filename} is {size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.1f} MB. Send a smaller file.")
    if size <= 0:
        raise error(f"{filename} is empty; attach the file again.")
    suffix = PurePosixPath(filename.lower()).suffix
    base = (content_type or "").split(";")[0].strip().lower()
    if kind == "audio":
        if not is_audio(filename, content_type):
            raise error(f"{filename} is not an audio file; send a voice message or an .ogg/.wav/.mp3 file.")
    elif suffix not in DATA_SUFFIXES and base not in DATA_TYPES:
        raise error(f"{filename} is not a JSON/JSONL/CSV/text file; attach training data in one of those formats.")


async def read_capped(session: aiohttp.ClientSession, url: str, *, max_bytes: int, filename: str,
                      kind: str) -> bytes:
    """Download `url`, aborting as soon as more than `max_bytes` arrive."""
    error = AudioError if kind == "audio" else DatasetError
    data = bytearray()
    try:
        async with session.get(url) as response:
            if response.status != 200:
                raise error(f"Could not download {filename} (HTTP {response.status}); attach it again.")
            declared = response.content_length
            if declared is not None and declared > max_bytes:
                raise error(f"{filename} is larger than the {max_bytes / 1e6:.1f} MB limit.")
            async for chunk in response.content.iter_chunked(CHUNK):
                data.extend(chunk)
                if len(data) > max_bytes:
                    raise error(f"{filename} is larger than the {max_bytes / 1e6:.1f} MB limit.")
    except aiohttp.ClientError as exc:
        raise error(f"Could not download {filename} ({exc}); attach it again.") from None
    return bytes(data)


async def fetch(session: aiohttp.ClientSession, attachment: object, *, max_bytes: int, kind: str) -> bytes:
    """Check a nextcord Attachment's declared size and type, then read it with the cap."""
    filename = str(getattr(attachment, "filename", "file"))
    check_attachment(filename, getattr(attachment, "content_type", None), int(getattr(attachment, "size", 0)),
                     max_bytes=max_bytes, kind=kind)
    return await read_capped(session, str(getattr(attachment, "url")), max_bytes=max_bytes, filename=filename,
                             kind=kind)
