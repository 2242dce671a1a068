"""What every chat backend offers the rest of the assistant, whatever runs the model."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import AsyncIterator, Final, TypedDict


class Message(TypedDict):
    role: str  # "system", "user" or "assistant"
    content: str


class _ActiveAdapter:
    def __repr__(self) -> str:
        return "ACTIVE_ADAPTER"


ACTIVE_ADAPTER: Final = _ActiveAdapter()
"""Sentinel for GenerationOptions.adapter: use whatever adapter the engine has active."""


@dataclass(frozen=True)
class GenerationOptions:
    """Per-request options; never stored on a shared model (requests must not leak into each other)."""

    max_new_tokens: int = 256
    # 0 means greedy decoding: the same prompt always gives the same answer.
    temperature: float = 0.0
    top_p: float = 1.0
    # None = the base model without adapter; a name = that loaded adapter; ACTIVE_ADAPTER = the engine's active one.
    adapter: str | None | _ActiveAdapter = ACTIVE_ADAPTER
    seed: int | None = None
    # Repetition guard (small models loop, worst when spoken): 1.0 = off; above 1 lowers the score
    # of every token already generated in this answer, as llama.cpp's repeat penalty does.
    repetition_penalty: float = 1.0
    # 0 = off; n forbids a token that would repeat an n-token sequence already generated.
    no_repeat_ngram: int = 0


@dataclass(frozen=True)
class GenerationStats:
    """Timings of one finished request, for `stats` and benchmarks."""

    prompt_tokens: int
    completion_tokens: int
    queued_s: float  # submit -> first forward pass that includes this request
    first_token_s: float  # submit -> first token
    total_s: float
    cached_tokens: int = 0  # prompt tokens reused from an earlier request (prefix cache), not prefilled


class ChatBackend(abc.ABC):
    """A language model that continues conversations; shared by all front ends."""

    #: Whether `load_adapter` can work: front ends skip the active adapter (without a warning) when not.
    supports_adapters: bool = False

    @abc.abstractmethod
    def stream(self, messages: list[Message], options: GenerationOptions | None = None) -> AsyncIterator[str]:
        """Yield the reply as text deltas as it is generated. Runs off the event loop."""

    async def complete(self, messages: list[Message], options: GenerationOptions | None = None) -> str:
        parts = [delta async for delta in self.stream(messages, options)]
        return "".join(parts)

    @abc.abstractmethod
    def count_tokens(self, messages: list[Message]) -> int:
        """Tokens these messages take in the prompt (for trimming history to the budget)."""

    @property
    def active_adapter(self) -> str | None:
        return None

    def adapters(self) -> list[str]:
        return []

    async def load_adapter(self, name: str, path: str) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot load LoRA adapters")

    def set_active_adapter(self, name: str | None) -> None:
        if name is not None:
            raise NotImplementedError(f"{type(self).__name__} cannot use LoRA adapters")

    async def end_of_turn_probability(self, text: str, *, system_prompt: str = "",
                                      answer_follows: bool = False) -> float | None:
        """P(the user's message is finished after `text`), from the model's own next-token
        probabilities (`turn_probe`); None when this backend cannot tell (the caller then trusts
        the audio alone). Runs on the base model, whatever adapter is active.
        `answer_follows`: the caller asks for an answer right after; a backend may compute both
        in one pass."""
        return None

    async def aclose(self) -> None:
        """Stop background work; pending requests fail with GenerationError."""
