"""The attachment CDN: minting attachment records and serving their bytes.

URLs look like Discord's (``/attachments/{channel}/{id}/{filename}?ex=&is=&hm=&``)
so a bot that parses or re-signs them meets the same shape; the query is ignored.
Content types follow Discord: guessed from the extension, ``; charset=utf-8``
added for text.
"""

from __future__ import annotations

import hashlib
import mimetypes
import struct
import time
from urllib.parse import quote

from aiohttp import web

from .models import Attachment

_EXTRA_TYPES = {".ogg": "audio/ogg", ".opus": "audio/ogg", ".wav": "audio/wav", ".mp3": "audio/mpeg"}


def guess_content_type(filename: str) -> str:
    ext = "." + filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    ctype = _EXTRA_TYPES.get(ext) or mimetypes.guess_type(filename)[0] or "application/octet-stream"
    return f"{ctype}; charset=utf-8" if ctype.startswith("text/") else ctype


def mint(
    attachment_id: int,
    base_url: str,
    channel_id: int,
    filename: str,
    data: bytes,
    content_type: str | None = None,
    *,
    description: str | None = None,
    duration_secs: float | None = None,
    waveform: str | None = None,
) -> Attachment:
    filename = filename.replace(" ", "_")
    now = int(time.time())
    expires = now + 86400
    sig = hashlib.sha256(f"{attachment_id}{expires}".encode()).hexdigest()[:32]
    url = (
        f"{base_url}/attachments/{channel_id}/{attachment_id}/{quote(filename)}"
        f"?ex={expires:x}&is={now:x}&hm={sig}&"
    )
    a = Attachment(attachment_id, filename, bytes(data), content_type or guess_content_type(filename),
                   url, description, duration_secs, waveform)
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        a.width, a.height = struct.unpack(">II", data[16:24])
    return a


def serve(attachments: dict[int, Attachment], request: web.Request) -> web.Response:
    try:
        att = attachments[int(request.match_info["attachment_id"])]
    except (KeyError, ValueError):
        return web.Response(status=404, text="Not Found")
    return web.Response(body=att.data, headers={"Content-Type": att.content_type, "Via": "1.1 google"})
