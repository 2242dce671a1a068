"""A thin, typed layer over llama.cpp's C API (through llama-cpp-python's ctypes bindings).

Why the low-level API and not `llama_cpp.Llama`: `Llama` runs one sequence at a time and
applies one LoRA adapter at load. The engine needs one context holding several sequences
(each with its own KV cells, kept between requests for prefix reuse), decode calls that
mix those sequences, and adapters switched per decode call. Everything here runs on the
engine's worker thread, except `tokenize` and `render`, which only read the vocabulary.
"""

from __future__ import annotations

import ctypes
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from assistant.errors import AdapterError, GenerationError, ModelNotAvailableError
from assistant.llm.base import Message
from assistant.omp import apply_thread_wait

logger = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
_LOG_LEVELS = {3: logging.WARNING, 4: logging.ERROR}


def set_thread_wait(policy: str) -> None:
    """How llama.cpp's OpenMP threads wait at the barriers between graph nodes (`assistant/omp.py`
    says why it matters). Read once, when the library loads, so this must run before the first
    `import llama_cpp`."""
    if "llama_cpp" not in sys.modules:
        apply_thread_wait(policy)


def llama_cpp_available() -> str | None:
    """None when llama-cpp-python imports; otherwise why not (for `backend = "auto"`'s log)."""
    try:
        import llama_cpp  # noqa: F401
    except (ImportError, OSError) as exc:  # OSError: the shared library failed to load
        return f"llama-cpp-python is not importable ({str(exc).splitlines()[0]}); scripts/setup.sh builds it"
    return None


def check_gguf_file(path: Path) -> None:
    """Refuse a file that is not a whole GGUF before llama.cpp reads it (its own error is a bare 'failed')."""
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise ModelNotAvailableError(f"Cannot read the model file {path}: {exc.strerror}.") from None
    if magic != GGUF_MAGIC:
        raise ModelNotAvailableError(f"{path} is not a GGUF file (it starts with {magic!r}); "
                                     "run `assistant models fetch --force` or point model.name at a .gguf file.")


_log_callback: Any = None


def route_logs() -> None:
    """llama.cpp prints every load detail to stderr; keep warnings and errors, in our log."""
    global _log_callback
    import llama_cpp

    if _log_callback is not None:
        return

    def forward(level: int, text: bytes, _user: Any) -> None:
        if level in _LOG_LEVELS and text.strip():
            logger.log(_LOG_LEVELS[level], "llama.cpp: %s", text.decode("utf-8", "replace").rstrip())

    _log_callback = llama_cpp.llama_log_callback(forward)
    llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))


class GgufModel:
    """One loaded GGUF model and one multi-sequence context over it."""

    def __init__(self, path: Path, *, n_seq: int, ctx_per_seq: int, threads: int, gpu: bool = False,
                 n_batch: int = 512, unified_kv: bool = False) -> None:
        import llama_cpp

        self._ll = llama_cpp
        route_logs()
        check_gguf_file(path)
        llama_cpp.llama_backend_init()
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = -1 if gpu else 0
        self.model = llama_cpp.llama_model_load_from_file(str(path).encode(), mparams)
        if not self.model:
            raise ModelNotAvailableError(f"llama.cpp could not load {path}: the file is truncated, corrupt or "
                                         "of an unsupported architecture; run `assistant models fetch --force`.")
        self.path = path
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self.n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(self.model))
        self.architecture = self._meta("general.architecture")
        self.heads = (int(self._meta(f"{self.architecture}.attention.head_count") or 0),
                      int(self._meta(f"{self.architecture}.attention.head_count_kv") or 0))
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_seq_max = n_seq
        cparams.n_ctx = n_seq * min(ctx_per_seq, self.n_ctx_train)
        cparams.n_batch = cparams.n_ubatch = n_batch
        cparams.n_threads = cparams.n_threads_batch = threads
        # One KV stream per sequence: attention never reads the others (`unified_kv`: for bench/ only).
        cparams.kv_unified = unified_kv
        cparams.no_perf = True
        self.ctx = llama_cpp.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            llama_cpp.llama_model_free(self.model)
            raise ModelNotAvailableError(f"llama.cpp could not create a context for {path} "
                                         f"({n_seq} sequences of {ctx_per_seq} tokens); lower model.max_batch_size "
                                         "or model.context_tokens.")
        self.n_seq = n_seq
        self.ctx_per_seq = int(llama_cpp.llama_n_ctx_seq(self.ctx))
        self.n_batch = n_batch
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self._batch = llama_cpp.llama_batch_init(max(n_batch, n_seq), 0, 1)
        self.chat_template = self._meta("tokenizer.chat_template")
        self._special = {name: self._piece_text(tok) for name, tok in (
            ("bos_token", llama_cpp.llama_vocab_bos(self.vocab)), ("eos_token", llama_cpp.llama_vocab_eos(self.vocab)))}
        self._adapter_set: object = None

    # ----- text <-> tokens (thread-safe: the vocabulary is read only) -----

    def _meta(self, key: str) -> str:
        size = self._ll.llama_model_meta_val_str(self.model, key.encode(), None, 0)
        if size < 0:
            return ""
        buf = ctypes.create_string_buffer(size + 1)
        self._ll.llama_model_meta_val_str(self.model, key.encode(), buf, size + 1)
        return buf.value.decode("utf-8", "replace")

    def _piece_text(self, token: int) -> str:
        return "" if token < 0 else self.piece(token, special=True).decode("utf-8", "replace")

    def render(self, messages: list[Message]) -> str:
        """The prompt text of `messages` by the model's own chat template (as transformers renders it)."""
        from assistant.llm.chat_template import render_chat

        if not self.chat_template:
            raise GenerationError(f"{self.path.name} has no chat template; use an instruct model.")
        return render_chat(self.chat_template, messages, **self._special)

    def tokenize(self, text: str) -> list[int]:
        raw = text.encode("utf-8")
        capacity = len(raw) + 16
        buf = (self._ll.llama_token * capacity)()
        n = self._ll.llama_tokenize(self.vocab, raw, len(raw), buf, capacity, False, True)
        if n < 0:  # more tokens than bytes + 16 cannot happen for BPE, but the API allows it
            capacity = -n
            buf = (self._ll.llama_token * capacity)()
            n = self._ll.llama_tokenize(self.vocab, raw, len(raw), buf, capacity, False, True)
        return list(buf[:n])

    def piece(self, token: int, *, special: bool = False) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self._ll.llama_token_to_piece(self.vocab, token, buf, 64, 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._ll.llama_token_to_piece(self.vocab, token, buf, -n, 0, special)
        return buf.raw[:n]

    def is_eog(self, token: int) -> bool:
        return bool(self._ll.llama_vocab_is_eog(self.vocab, token))

    # ----- the context (worker thread only) -----

    def decode(self, rows: list[tuple[int, list[int], int, bool]]) -> list[int]:
        """Feed tokens: each row is (sequence, tokens, position of the first, logits for the last?).
        Returns, per row that asked (in the order given), the batch index its logits are read from.

        The rows go into the batch in sequence order: with one KV stream per sequence, llama.cpp
        cuts a batch whose sequences are out of order into several smaller computations. Eight
        requests admitted in least-recently-used order ([1..7, 0]) took 83 ms a step instead of
        60 (SmolLM2-135M, 2 cores); shuffled, 131 ms.
        """
        batch = self._batch
        n, placed = 0, {}
        for i in sorted(range(len(rows)), key=lambda i: rows[i][0]):
            seq, tokens, start, last_logits = rows[i]
            for j, token in enumerate(tokens):
                batch.token[n] = token
                batch.pos[n] = start + j
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq
                batch.logits[n] = 1 if last_logits and j == len(tokens) - 1 else 0
                n += 1
            if last_logits:
                placed[i] = n - 1
        batch.n_tokens = n
        status = self._ll.llama_decode(self.ctx, batch)
        if status != 0:
            raise GenerationError(f"llama.cpp could not decode the batch (status {status}); "
                                  "the context may be full: shorten the conversation.")
        return [placed[i] for i in sorted(placed)]

    def logits(self, index: int) -> npt.NDArray[np.float32]:
        """The logits of batch row `index` (a view valid until the next decode)."""
        pointer = self._ll.llama_get_logits_ith(self.ctx, index)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))

    def forget(self, seq: int, start: int = 0) -> bool:
        """Drop sequence `seq`'s KV cells from position `start` on; False if it cannot be cut there."""
        return bool(self._ll.llama_memory_seq_rm(self.memory, seq, start, -1))

    def copy_sequence(self, source: int, target: int) -> None:
        """Give sequence `target` a copy of `source`'s KV cells (then cut it with `forget`). Across
        KV streams llama.cpp copies the whole stream, at the start of the next decode."""
        self._ll.llama_memory_seq_cp(self.memory, source, target, -1, -1)

    def load_adapter(self, path: Path) -> Any:
        adapter = self._ll.llama_adapter_lora_init(self.model, str(path).encode())
        if not adapter:
            raise AdapterError(f"llama.cpp refused the adapter {path} (made for another base model?).")
        return adapter

    def free_adapter(self, adapter: Any) -> None:
        if self._adapter_set is adapter:
            self.use_adapter(None)
        self._ll.llama_adapter_lora_free(adapter)

    def use_adapter(self, adapter: Any) -> None:
        """Apply `adapter` (None = the base model) to the next decode calls."""
        if adapter is self._adapter_set:
            return
        if adapter is None:
            status = self._ll.llama_set_adapters_lora(self.ctx, None, 0, None)
        else:
            adapters = (self._ll.llama_adapter_lora_p_ctypes * 1)(adapter)
            scales = (ctypes.c_float * 1)(1.0)
            status = self._ll.llama_set_adapters_lora(self.ctx, adapters, 1, scales)
        if status != 0:
            raise AdapterError(f"llama.cpp could not apply the adapter (status {status}).")
        self._adapter_set = adapter

    def close(self) -> None:
        if getattr(self, "ctx", None):
            self._ll.llama_batch_free(self._batch)
            self._ll.llama_free(self.ctx)
            self._ll.llama_model_free(self.model)
            self.ctx = None
