"""An OpenAI-compatible server as the chat backend (vLLM, llama.cpp's server, ...).

Users whose model does not fit one box run it behind such a server; the rest of the
assistant cannot tell the difference. Streaming uses the server-sent events of
`POST {base}/chat/completions` with `stream: true`. We never call a hosted AI API: the base
URL is whatever the operator configured, normally on their own network.
"""

from __future__ import annotations

import json
import logging
from typing import Any, AsyncIterator

import aiohttp

from assistant.errors import BackendError
from assistant.llm.base import ChatBackend, GenerationOptions, Message
from assistant.prompting import DEFAULT_GUARD

logger = logging.getLogger(__name__)


class OpenAIBackend(ChatBackend):
    def __init__(self, base_url: str, model: str, *, api_key: str = "", timeout_s: float = 120.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, sock_read=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def count_tokens(self, messages: list[Message]) -> int:
        # The server's tokenizer is not here; ~3.5 characters per token errs on the long side.
        return sum(4 + int(len(m["content"]) / 3.5) for m in messages) + 2

    async def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._session = aiohttp.ClientSession(timeout=self.timeout, headers=headers)
        return self._session

    def _payload(self, messages: list[Message], options: GenerationOptions) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": self.model, "messages": DEFAULT_GUARD.escape_messages(list(messages)), "stream": True,
                                   "max_tokens": options.max_new_tokens, "temperature": options.temperature}
        if options.temperature > 0:
            payload["top_p"] = options.top_p
            if options.seed is not None:
                payload["seed"] = options.seed
        return payload

    async def stream(self, messages: list[Message], options: GenerationOptions | None = None) -> AsyncIterator[str]:
        options = options or GenerationOptions()
        url = f"{self.base_url}/chat/completions"
        session = await self._client()
        try:
            async with session.post(url, json=self._payload(messages, options)) as response:
                if response.status != 200:
                    body = (await response.text())[:300]
                    raise BackendError(f"The model server at {self.base_url} answered {response.status}: {body}")
                async for delta in _sse_deltas(response):
                    yield delta
        except aiohttp.ClientError as exc:
            raise BackendError(f"Cannot reach the model server at {self.base_url} ({exc}); "
                               "is it running? Check model.openai_base_url.") from None
        except TimeoutError:
            raise BackendError(f"The model server at {self.base_url} did not answer in time.") from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


async def _sse_deltas(response: aiohttp.ClientResponse) -> AsyncIterator[str]:
    """Text deltas from an OpenAI chat-completions event stream (also accepts a non-streamed body)."""
    if not response.content_type.startswith("text/event-stream"):
        body = await response.json(content_type=None)
        text = body["choices"][0]["message"].get("content") or ""
        if text:
            yield text
        return
    async for raw in response.content:
        line = raw.decode("utf-8", errors="replace").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            event = json.loads(data)
        except ValueError:
            logger.warning("Ignoring a malformed event from the model server: %.80s", data)
            continue
        if "error" in event:
            raise BackendError(f"The model server reported an error: {event['error']}")
        for choice in event.get("choices", []):
            text = (choice.get("delta") or {}).get("content")
            if text:
                yield text
