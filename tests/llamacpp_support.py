"""Shared by the llama.cpp tests: skip only where llama-cpp-python cannot be built here."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from assistant.llm.catalog import gguf_path
from assistant.config import parse_config
from assistant.llm.gguf_runtime import llama_cpp_available, set_thread_wait

SMALL = "smollm2-135m-instruct"  # the tests' model: the default model would add minutes


def require_llama_cpp() -> None:
    """Skip when the build tools are missing; fail when they are present (setup should have built it)."""
    set_thread_wait(parse_config({}).model.thread_wait)  # as the app does, before the library loads
    missing = llama_cpp_available()
    if missing is None:
        return
    if shutil.which("cmake") and (shutil.which("c++") or shutil.which("g++")):
        pytest.fail(f"{missing}, although cmake and a C++ compiler are here: run scripts/setup.sh")
    pytest.skip(f"{missing}; cmake and a C++ compiler are needed to build it")


def small_gguf(models_dir: Path) -> Path:
    path = gguf_path(SMALL, models_dir)
    if path is None:
        pytest.fail(f"{SMALL} has no model.gguf in {models_dir}: run `assistant models fetch`")
    return path
