"""Our LoRA adapters on llama.cpp's HTTP server (llama-server), which we may also run ourselves.

llama-server loads adapters only at start (`--lora FILE`, repeatable; `--lora-init-without-apply`
starts them at scale 0) and lists them at `GET /lora-adapters` as `{id, path, scale}`. Each
request then carries `"lora": [{"id": …, "scale": …}]` for *every* id: an unlisted adapter gets
scale 0, but an empty list does not reset them (an open upstream bug), so we always send all.
Adapters are GGUF files, converted once from finetune's peft output (`lora_gguf`).

With `model.manage_server = true` we start llama-server ourselves on the model's GGUF, with the
adapters activated so far, and restart it (seconds, logged) when a new one is activated; without
it the operator starts the server with `--lora runs/<name>/adapter/adapter.gguf` for each adapter.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import aiohttp

from assistant.errors import AdapterError, BackendError
from assistant.llm.gguf_file import GgufFile
from assistant.llm.served_adapters import adapter_base_names, normalised_model_name

logger = logging.getLogger(__name__)

Request = Callable[[str, str, dict[str, Any] | None], Awaitable[tuple[int, Any]]]
START_TIMEOUT_S = 120.0


def gguf_architecture(path: Path) -> tuple[str, tuple[int, int]]:
    """`general.architecture` and (attention heads, key/value heads) of a GGUF file: what its LoRA
    adapters must be converted for (llama's q/k rows are permuted by head)."""
    try:
        fields = GgufFile(path).fields
        arch = str(fields["general.architecture"])

        def number(key: str) -> int:  # per-layer counts are arrays: the first layer's
            value = fields.get(f"{arch}.{key}", 0)
            return int(value[0] if isinstance(value, list) else value)

        heads = number("attention.head_count")
        return arch, (heads, number("attention.head_count_kv") or heads)
    except (OSError, KeyError, ValueError, IndexError) as exc:  # GgufFormatError is a ValueError
        raise BackendError(f"Cannot read the architecture of {path} ({exc}); is it a GGUF model?") from None


def find_llama_server(configured: str) -> Path:
    """The llama-server binary: the configured path, else the one scripts/build_llama_server.sh cached."""
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise BackendError(f"model.llama_server_binary = {configured!r} does not exist.")
        return path
    cached = sorted((Path.home() / ".cache" / "local-voice-assistant").glob("llama-server-*/llama-server"))
    if not cached:
        raise BackendError("No llama-server binary: run `scripts/build_llama_server.sh` once (it builds and "
                           "caches it), or set model.llama_server_binary.")
    return cached[-1]


class ManagedLlamaServer:
    """One llama-server process on loopback, restarted with a new adapter list when asked."""

    def __init__(self, binary: Path, model: Path, *, port: int, context: int, parallel: int, threads: int,
                 log_path: Path | None = None) -> None:
        self.binary, self.model, self.port = binary, model, port
        self.context, self.parallel, self.threads = context, parallel, threads
        self.log_path = log_path
        self.adapters: list[Path] = []
        self._process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    def command(self, adapters: list[Path]) -> list[str]:
        cmd = [str(self.binary), "-m", str(self.model), "--host", "127.0.0.1", "--port", str(self.port),
               "-c", str(self.context * self.parallel), "-np", str(self.parallel), "--no-webui"]
        if self.threads:
            cmd += ["-t", str(self.threads)]
        for adapter in adapters:
            cmd += ["--lora", str(adapter)]
        if adapters:
            cmd.append("--lora-init-without-apply")
        return cmd

    async def start(self, adapters: list[Path]) -> float:
        """(Re)start with `adapters`; seconds until the server answered /health."""
        async with self._lock:
            started = time.perf_counter()
            await self._stop()
            log = self.log_path.open("ab") if self.log_path is not None else asyncio.subprocess.DEVNULL
            try:
                self._process = await asyncio.create_subprocess_exec(
                    *self.command(adapters), stdout=log, stderr=log, stdin=asyncio.subprocess.DEVNULL)
            except OSError as exc:
                raise BackendError(f"Cannot start llama-server ({exc}).") from None
            finally:
                if not isinstance(log, int):
                    log.close()
            await self._wait_healthy()
            self.adapters = list(adapters)
            seconds = time.perf_counter() - started
            logger.info("llama-server on port %d ready in %.1f s with %d adapter(s)", self.port, seconds,
                        len(adapters))
            return seconds

    async def _wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while time.monotonic() < deadline:
                if self._process is None or self._process.returncode is not None:
                    raise BackendError(f"llama-server exited at start (code {self._process and self._process.returncode}); "
                                       f"see {self.log_path or 'its output'}.")
                try:
                    async with http.get(f"{self.base_url}/health") as response:
                        if response.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.2)
        await self._stop()
        raise BackendError(f"llama-server did not become ready within {START_TIMEOUT_S:.0f} s.")

    async def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def stop(self) -> None:
        async with self._lock:
            await self._stop()


class LlamaServerAdapters:
    """Adapter names ↔ llama-server's adapter ids, and the `lora` field of each request."""

    def __init__(self, request: Request, *, base_url: str, convert: Callable[[Path], Path] | None,
                 managed: ManagedLlamaServer | None = None) -> None:
        self._request, self.base_url, self._convert, self.managed = request, base_url, convert, managed
        self._files: dict[str, Path] = {}  # name -> its GGUF (what we asked the server to load)
        self._ids: dict[str, int] = {}  # name -> the server's id
        self._all_ids: list[int] = []
        self.active: str | None = None

    def names(self) -> list[str]:
        return sorted(self._ids)

    async def _served_model(self) -> str:
        status, body = await self._request("GET", "/v1/models", None)
        if status == 200 and isinstance(body, dict) and body.get("data"):
            return str(body["data"][0].get("id") or "")
        return ""

    async def refresh(self) -> None:
        status, body = await self._request("GET", "/lora-adapters", None)
        if status != 200 or not isinstance(body, list):
            raise AdapterError(f"The llama-server at {self.base_url} did not list its adapters (HTTP {status}).")
        self._all_ids = [int(a["id"]) for a in body]
        self._ids = {}
        for name, gguf in self._files.items():
            for item in body:
                served = Path(str(item.get("path", "")))
                if served == gguf or served.parts[-3:] == gguf.parts[-3:]:
                    self._ids[name] = int(item["id"])

    async def load(self, name: str, path: str) -> None:
        folder = Path(path)
        served = normalised_model_name(await self._served_model())
        trained = adapter_base_names(folder)
        if served and trained and served not in trained:
            raise AdapterError(f"The adapter {name!r} was trained on {', '.join(sorted(trained))}, but the "
                               f"llama-server at {self.base_url} serves {served}; train it for that model.")
        if self._convert is None:
            raise AdapterError("Adapters for llama-server are converted to GGUF here, which needs the model's GGUF "
                               "file (to know its architecture): set model.name to it or run `assistant models fetch`.")
        gguf = await asyncio.to_thread(self._convert, folder)
        self._files[name] = gguf
        if self.managed is not None and gguf not in self.managed.adapters:
            seconds = await self.managed.start([*self.managed.adapters, gguf])
            logger.info("Restarted llama-server with adapter %s in %.1f s", name, seconds)
        await self.refresh()
        if name not in self._ids:
            del self._files[name]
            raise AdapterError(f"The llama-server at {self.base_url} was not started with this adapter: restart it "
                               f"with `--lora {gguf} --lora-init-without-apply`, or set model.manage_server = true.")

    def activate(self, name: str | None) -> None:
        if name is not None and name not in self._ids:
            raise AdapterError(f"The adapter {name!r} is not loaded on the llama-server; activate it again.")
        self.active = name

    def request_fields(self, adapter: str | None) -> dict[str, Any]:
        """Every adapter id with an explicit scale: 1 for `adapter`, 0 for the rest (requests with
        different scale sets are never batched together by llama-server)."""
        if adapter is not None and adapter not in self._ids:
            raise AdapterError(f"The adapter {adapter!r} is not loaded on the llama-server at {self.base_url}.")
        wanted = self._ids.get(adapter) if adapter is not None else None
        if not self._all_ids:
            return {}
        return {"lora": [{"id": i, "scale": 1.0 if i == wanted else 0.0} for i in self._all_ids]}
