"""Rendering a GGUF's embedded chat template exactly as transformers renders it.

Why it matters: the prompt decides the answer, and a LoRA adapter trained through
transformers only applies well to the prompts it was trained on. transformers renders
templates with a sandboxed Jinja environment (trim_blocks, lstrip_blocks, loop controls,
`raise_exception`, `strftime_now`); we do the same, so both engines feed the same tokens.
"""

from __future__ import annotations

import datetime
import functools
import json
from typing import Any, NoReturn

from assistant.errors import GenerationError
from assistant.llm.base import Message


def _raise(message: str) -> NoReturn:
    raise GenerationError(f"The model's chat template refused the conversation: {message}")


def _tojson(value: Any, indent: int | None = None, **_: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


@functools.lru_cache(maxsize=8)
def _compile(template: str) -> Any:
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    return env.from_string(template)


def render_chat(template: str, messages: list[Message], *, bos_token: str = "", eos_token: str = "") -> str:
    """The prompt text for `messages`, ending where the assistant's answer begins."""
    from jinja2 import TemplateError

    try:
        return str(_compile(template).render(messages=list(messages), add_generation_prompt=True,
                                             bos_token=bos_token, eos_token=eos_token))
    except TemplateError as exc:
        raise GenerationError(f"The model's chat template failed: {exc}") from None
