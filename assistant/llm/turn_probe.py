"""How likely a person's words are a finished message, read off the chat model we serve anyway.

Why: the audio turn model (Smart Turn) hears intonation, and a flat or synthetic voice can
end "Which season comes" on a falling pitch; whisper then writes "Which season comes." and
the turn is cut off mid-question. LiveKit's turn detector reads the *words* instead, with a
fine-tuned Qwen2.5-0.5B. Our instruct model gives a usable signal without extra weights: after
an unfinished sentence it puts almost no probability on ending it, after a finished one it does.

How: the conversation is rendered with the user's turn left open after their words
(lower-cased, punctuation removed, as LiveKit does, so whisper's full stop does not decide),
and the model's next-token probabilities are summed over the tokens that end a sentence
('.', '?', '!' and what follows them) and the end-of-message tokens.

Measured (system prompt "You are a helpful, concise assistant."): Qwen2.5-Coder-0.5B gives the
ten fragments of bench/bench_voice.py ("What is the capital of", "Which season comes", ...)
0.000-0.004 and whisper's misheard fragments ("Remind me to call mine") up to 0.036, while 23
finished questions and commands ("Set a timer for ten minutes", "Thanks") get 0.020-0.95.
SmolLM2-135M: fragments 0-0.2 (two misheard ones high), finished ones 0.005-0.90.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import numpy as np
import numpy.typing as npt

from assistant.llm.base import Message

_SENTINEL = "\u2063\u2063"  # invisible separators: never in a transcript, kept as they are by chat templates
_NOT_WORDS = re.compile(r"[^\w\s']+")
_ENDING = (".", "?", "!", "\u3002", "\uff1f", "\uff01")  # and the full-width forms of CJK text


def normalise(text: str) -> str:
    """The words alone: "Which season comes." and "which season comes" must score alike."""
    return " ".join(_NOT_WORDS.sub(" ", text).lower().split())


def open_user_turn(render: Callable[[list[Message]], str], system_prompt: str, words: str) -> str:
    """The prompt text up to the end of the user's words, with their turn still open.

    Rendered by the model's own chat template (so it is the prompt the model knows) with a
    sentinel after the words, then cut there: the end-of-turn marker is exactly what we ask about."""
    messages: list[Message] = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": words + _SENTINEL})
    rendered = render(messages)
    cut = rendered.find(_SENTINEL)
    if cut < 0:
        raise ValueError("the chat template dropped the user's words")
    return rendered[:cut]


def sentence_enders(pieces: Iterable[tuple[int, bytes]], is_end_of_message: Callable[[int], bool]) -> npt.NDArray[np.int64]:
    """Token ids that end a sentence ("?", ".\\n", "!\"") or the message; an ellipsis does not."""
    ids = []
    for token, piece in pieces:
        text = piece.decode("utf-8", "ignore")
        if is_end_of_message(token) or (text.startswith(_ENDING) and not text.startswith("..")):
            ids.append(token)
    return np.array(ids, dtype=np.int64)


def probability_of(logits: npt.NDArray[np.float32], ids: npt.NDArray[np.int64]) -> float:
    """Softmax mass of `ids` (computed stably in float64)."""
    scores = logits.astype(np.float64)
    weights = np.exp(scores - scores.max())
    return float(weights[ids].sum() / weights.sum())
