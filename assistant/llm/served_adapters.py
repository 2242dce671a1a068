"""Our LoRA adapters on a vLLM server: load them there, check they fit its base model, name them per request.

vLLM reads an adapter folder itself (`POST /v1/load_lora_adapter {"lora_name", "lora_path"}`),
so nothing is uploaded: the operator makes our runs folder readable by the server and tells
us where it sees it (`model.openai_adapter_dir`). A request selects an adapter by putting its
name in `model`; the base model is selected by its own name. Loading a name that is already
loaded unloads it first, so a retrained adapter of the same name is read again.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path, PurePosixPath
from typing import Any, Awaitable, Callable

from assistant.adapters import read_metadata
from assistant.errors import AdapterError

logger = logging.getLogger(__name__)

Request = Callable[[str, str, dict[str, Any] | None], Awaitable[tuple[int, Any]]]
_GENERIC = {"model", "ggml-model", "weights"}
_QUANT = re.compile(r"[-._](?:q\d[a-z0-9_]*|f16|bf16|fp16|gguf)$")


def normalised_model_name(name: str) -> str:
    """`HuggingFaceTB/SmolLM2-135M-Instruct`, `/models/smollm2-135m-instruct/`,
    `smollm2-135m-instruct.Q4_1.gguf` and `models/llm/smollm2-135m-instruct/model.gguf` all name
    the same model."""
    path = PurePosixPath(name.strip().rstrip("/").replace("\\", "/"))
    last = path.name.lower()
    while (shorter := _QUANT.sub("", last)) != last:
        last = shorter
    if last in _GENERIC and path.parent.name:  # models/llm/<name>/model.gguf: the folder names the model
        return normalised_model_name(str(path.parent))
    return last


def adapter_base_names(adapter_dir: Path) -> set[str]:
    """Every name the adapter's base model was recorded under (training metadata, peft config)."""
    metadata = read_metadata(adapter_dir)
    base = metadata.get("base_model") or {}
    names = {str(base.get(k) or "") for k in ("name", "config_name")}
    try:
        declared = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
        names.add(str(declared.get("base_model_name_or_path") or ""))
    except (OSError, ValueError):
        pass
    return {normalised_model_name(n) for n in names if n}


def check_servable(adapter_dir: Path) -> None:
    """vLLM serves LoRA weights only: an adapter that also trains whole modules cannot load."""
    try:
        declared = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AdapterError(f"Cannot read {adapter_dir / 'adapter_config.json'} ({exc}).") from None
    if declared.get("modules_to_save"):
        raise AdapterError(f"The adapter {adapter_dir.parent.name!r} also trains whole modules "
                           f"({', '.join(declared['modules_to_save'])}); vLLM serves LoRA weights only. "
                           "Retrain it with finetune.modules_to_save empty.")


class ServedAdapters:
    def __init__(self, request: Request, *, base_url: str, base_model: str, adapter_dir: str = "") -> None:
        self._request = request
        self.base_url = base_url
        self.base_model = base_model
        self.adapter_dir = adapter_dir
        self._loaded: dict[str, str] = {}  # name -> the path the server read it from
        self.active: str | None = None

    def names(self) -> list[str]:
        return sorted(self._loaded)

    def server_path(self, local: Path) -> str:
        """Where the server finds `runs/<run>/adapter`: under `openai_adapter_dir` when set."""
        if not self.adapter_dir:
            return str(local)
        return str(PurePosixPath(self.adapter_dir) / local.parent.name / local.name)

    async def _served_models(self) -> list[dict[str, Any]]:
        status, body = await self._request("GET", "/models", None)
        if status != 200 or not isinstance(body, dict):
            raise AdapterError(f"The model server at {self.base_url} did not list its models "
                               f"(HTTP {status}); is it vLLM?")
        return [m for m in body.get("data", []) if isinstance(m, dict)]

    async def _check_base(self, adapter_dir: Path, models: list[dict[str, Any]]) -> None:
        bases = [m for m in models if not m.get("parent")]
        served = {normalised_model_name(str(m.get(k) or "")) for m in bases for k in ("id", "root")} - {""}
        trained = adapter_base_names(adapter_dir)
        if trained and served and not trained & served:
            raise AdapterError(f"The adapter {adapter_dir.parent.name!r} was trained on "
                               f"{', '.join(sorted(trained))}, but the server at {self.base_url} serves "
                               f"{', '.join(sorted(served))}; train it for that model or serve its base.")

    async def load(self, name: str, path: str) -> None:
        local = Path(path)
        check_servable(local)
        models = await self._served_models()
        await self._check_base(local, models)
        if name in self._loaded or any(m.get("id") == name and m.get("parent") for m in models):
            await self._request("POST", "/unload_lora_adapter", {"lora_name": name})
        where = self.server_path(local)
        status, body = await self._request("POST", "/load_lora_adapter", {"lora_name": name, "lora_path": where})
        if status != 200:
            raise AdapterError(f"The server at {self.base_url} could not load the adapter {name!r} from {where} "
                               f"(HTTP {status}: {str(body)[:200]}). It must be started with --enable-lora, a "
                               "--max-lora-rank at least finetune.lora_r, VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, "
                               "and see that folder (model.openai_adapter_dir).")
        self._loaded[name] = where
        logger.info("vLLM at %s loaded adapter %s from %s", self.base_url, name, where)

    def activate(self, name: str | None) -> None:
        if name is not None and name not in self._loaded:
            raise AdapterError(f"The adapter {name!r} is not loaded on the server; activate it again.")
        self.active = name

    def request_fields(self, adapter: str | None) -> dict[str, Any]:
        """vLLM selects an adapter by its name in `model`; the base by the base model's name."""
        if adapter is None:
            return {"model": self.base_model}
        if adapter not in self._loaded:
            raise AdapterError(f"The adapter {adapter!r} is not loaded on the server at {self.base_url}.")
        return {"model": adapter}
