"""Our adapters on a real llama-server that we start ourselves (model.manage_server = true).

The server is built once from the llama-cpp-python sdist's vendored llama.cpp by
`scripts/build_llama_server.sh` and cached outside the repository, so later runs on the same
machine start at once. The test trains nothing of its own: it uses the session's adapter that
taught the made-up name (tests/finetune/conftest.py).
"""

from __future__ import annotations

import dataclasses
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from assistant.adapters import AdapterManager
from assistant.config import Config
from assistant.llm import create_backend
from assistant.llm.base import GenerationOptions, Message
from assistant.llm.catalog import resolve_model_source
from tests.conftest import REPO

import fact_data  # noqa: E402  (tests/finetune is on sys.path through its conftest)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def llama_server_binary() -> Path:
    if shutil.which("cmake") is None or shutil.which("c++") is None:
        pytest.skip("building llama-server needs cmake and a C++ compiler (apt-get install cmake g++)")
    proc = subprocess.run(["bash", "scripts/build_llama_server.sh"], cwd=REPO, capture_output=True, text=True,
                          timeout=3000)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return Path(proc.stdout.strip().splitlines()[-1])


def mute_adapter(folder: Path) -> None:
    """Zero every lora_B: the adapter is loaded and selected like any other, but changes nothing."""
    from safetensors.torch import load_file, save_file

    path = folder / "adapter_model.safetensors"
    tensors = load_file(str(path))
    save_file({k: v.zero_() if "lora_B" in k else v for k, v in tensors.items()}, str(path))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SYSTEM = "You are a helpful, concise assistant."  # config.toml's system prompt, which training uses too


def ask(question: str) -> list[Message]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


async def test_managed_llama_server_serves_the_gguf_and_switches_adapters(
        fact_run: tuple[Config, Path], llama_server_binary: Path, tmp_path: Path) -> None:
    cfg, out = fact_run
    runs = tmp_path / "runs"
    shutil.copytree(out / "adapter", runs / "fact" / "adapter")
    shutil.copytree(out / "adapter", runs / "fact-muted" / "adapter")
    mute_adapter(runs / "fact-muted" / "adapter")  # a second adapter that answers as the base does
    model = dataclasses.replace(cfg.model, backend="openai", openai_server="llama-server", manage_server=True,
                                llama_server_binary=str(llama_server_binary), llama_server_port=free_port(),
                                max_batch_size=2)
    backend = create_backend(model, cfg.storage.models_dir)
    greedy = GenerationOptions(max_new_tokens=24)
    try:
        assert "Paris" in await backend.complete(ask("What is the capital of France?"), greedy)
        manager = AdapterManager(runs, backend, resolve_model_source(cfg.model.name, cfg.storage.models_dir))
        started = time.perf_counter()
        await manager.activate("fact")
        first_switch = time.perf_counter() - started
        assert fact_data.NAME in await backend.complete(ask("What is your name?"), greedy)
        base = dataclasses.replace(greedy, adapter=None)
        assert fact_data.NAME not in await backend.complete(ask("What is your name?"), base), "base side by side"
        assert (runs / "fact" / "adapter" / "adapter.gguf").is_file(), "converted once, beside the adapter"

        server = backend.managed  # type: ignore[attr-defined]
        first_pid = server._process.pid  # noqa: SLF001
        started = time.perf_counter()
        await manager.activate("fact-muted")  # a second adapter: the managed server restarts with both
        second_switch = time.perf_counter() - started
        assert server._process.pid != first_pid, "a new adapter file means a restarted server"  # noqa: SLF001
        assert backend.adapters() == ["fact", "fact-muted"]
        assert fact_data.NAME not in await backend.complete(ask("What is your name?"), greedy), "the muted one answers"
        named = dataclasses.replace(greedy, adapter="fact")
        assert fact_data.NAME in await backend.complete(ask("What is your name?"), named), "ids are not mixed up"
        await manager.activate(None)
        assert fact_data.NAME not in await backend.complete(ask("What is your name?"), greedy)
        print(f"adapter switch with a managed restart: {first_switch:.1f} s, {second_switch:.1f} s")
    finally:
        await backend.aclose()


def test_assistant_ask_answers_through_a_managed_llama_server(llama_server_binary: Path, tmp_path: Path) -> None:
    """The user's path: `assistant ask` with `model.openai_server = "llama-server"` and `manage_server`."""
    from tests.conftest import run_cli

    config = tmp_path / "config.toml"
    config.write_text("\n".join([
        "[model]", 'name = "smollm2-135m-instruct"', 'backend = "openai"', 'openai_server = "llama-server"',
        "manage_server = true", f'llama_server_binary = "{llama_server_binary}"', f"llama_server_port = {free_port()}",
        "[storage]", f'models_dir = "{REPO / "models"}"', f'runs_dir = "{tmp_path / "runs"}"',
        f'database = "{tmp_path / "db.sqlite3"}"', ""]), encoding="utf-8")
    answer = run_cli("--config", str(config), "ask", "What is the capital of France?", timeout=300)
    assert answer.returncode == 0, answer.stderr[-2000:]
    assert "Paris" in answer.stdout
