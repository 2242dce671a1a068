"""An OpenAI-compatible server as the chat backend (vLLM, llama.cpp's server, ...).

Users whose model does not fit one box run it behind such a server; the rest of the
assistant cannot tell the difference. Streaming uses the server-sent events of
`POST {base}/chat/completions` with `stream: true`. We never call a hosted AI API: the base
URL is whatever the operator configured, normally on their own network.

Adapters trained by `finetune` work on vLLM (`model.openai_server = "vllm"`; started with
`--enable-lora`, `--max-lora-rank` at least our rank, `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`):
activation uploads nothing — the server reads the adapter folder itself, at
`model.openai_adapter_dir/<run>/adapter` (or at our own path when that is empty) — we call
`/v1/load_lora_adapter`, and each request names its adapter in `model`. A "generic" server
refuses adapters with a message that says what to configure.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import aiohttp

from assistant.errors import AdapterError, BackendError
from assistant.llm.base import ACTIVE_ADAPTER, ChatBackend, GenerationOptions, Message
from assistant.llm.llama_server import LlamaServerAdapters, ManagedLlamaServer
from assistant.llm.served_adapters import ServedAdapters
from assistant.prompting import DEFAULT_GUARD

logger = logging.getLogger(__name__)


class OpenAIBackend(ChatBackend):
    def __init__(self, base_url: str, model: str, *, api_key: str = "", timeout_s: float = 120.0,
                 server: str = "generic", adapter_dir: str = "", convert: Callable[[Path], Path] | None = None,
                 managed: ManagedLlamaServer | None = None) -> None:
        self.managed = managed
        self.base_url = f"{managed.base_url}/v1" if managed is not None else base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.server = server
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, sock_read=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._served: ServedAdapters | LlamaServerAdapters | None = None
        if server == "vllm":
            self._served = ServedAdapters(self._request, base_url=self.base_url, base_model=model,
                                          adapter_dir=adapter_dir)
        elif server == "llama-server":
            self._served = LlamaServerAdapters(self._root_request, base_url=self.base_url, convert=convert,
                                               managed=managed)
        self.supports_adapters = self._served is not None

    @property
    def active_adapter(self) -> str | None:
        return self._served.active if self._served is not None else None

    def adapters(self) -> list[str]:
        return self._served.names() if self._served is not None else []

    async def load_adapter(self, name: str, path: str) -> None:
        if self._served is None:
            raise AdapterError(f"The model server at {self.base_url} is configured as a generic OpenAI-compatible "
                               "server, which cannot serve LoRA adapters; run vLLM with --enable-lora and set "
                               "model.openai_server = \"vllm\" (and model.openai_adapter_dir).")
        await self._served.load(name, path)

    def set_active_adapter(self, name: str | None) -> None:
        if self._served is None:
            super().set_active_adapter(name)
            return
        self._served.activate(name)

    def _adapter_fields(self, options: GenerationOptions) -> dict[str, Any]:
        """What selects the request's adapter: its name in `model` (vLLM), or every id's scale (llama-server)."""
        if self._served is None:
            return {}
        wanted = self._served.active if options.adapter is ACTIVE_ADAPTER else options.adapter
        return self._served.request_fields(wanted if isinstance(wanted, str) else None)

    async def _ensure_started(self) -> None:
        """A managed llama-server starts with the first request (or adapter), not at import or config time."""
        if self.managed is not None and not self.managed.running:
            await self.managed.start(self.managed.adapters)

    async def _root_request(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        """llama-server's own endpoints live beside /v1, not under it."""
        await self._ensure_started()
        root = self.base_url.removesuffix("/v1")
        return await self._request(method, path, body, base=root)

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None, *,
                       base: str | None = None) -> tuple[int, Any]:
        """One JSON call to the server (for adapter management); the status and the decoded body."""
        session = await self._client()
        try:
            async with session.request(method, f"{base or self.base_url}{path}", json=body) as response:
                text = await response.text()
                try:
                    return response.status, json.loads(text) if text.strip() else None
                except ValueError:
                    return response.status, text
        except aiohttp.ClientError as exc:
            raise BackendError(f"Cannot reach the model server at {self.base_url} ({exc}); "
                               "is it running? Check model.openai_base_url.") from None

    def count_tokens(self, messages: list[Message]) -> int:
        # The server's tokenizer is not here; ~3.5 characters per token errs on the long side.
        return sum(4 + int(len(m["content"]) / 3.5) for m in messages) + 2

    async def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            # llama-server drops a kept-alive connection after a streamed answer, so the next request on
            # it fails with "Server disconnected": one connection per request there (loopback, cheap).
            connector = aiohttp.TCPConnector(force_close=self.server == "llama-server")
            self._session = aiohttp.ClientSession(timeout=self.timeout, headers=headers, connector=connector)
        return self._session

    def _payload(self, messages: list[Message], options: GenerationOptions) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": self.model, "messages": DEFAULT_GUARD.escape_messages(list(messages)), "stream": True,
                                   "max_tokens": options.max_new_tokens, "temperature": options.temperature}
        payload.update(self._adapter_fields(options))
        if options.temperature > 0:
            payload["top_p"] = options.top_p
            if options.seed is not None:
                payload["seed"] = options.seed
        return payload

    async def stream(self, messages: list[Message], options: GenerationOptions | None = None) -> AsyncIterator[str]:
        options = options or GenerationOptions()
        await self._ensure_started()
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
        if self.managed is not None:
            await self.managed.stop()


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
