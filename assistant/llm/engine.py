"""The local chat engine: one model, one worker thread, continuous batching of all requests.

Why a worker thread with its own decode loop rather than `model.generate` per request:
concurrent users (a busy Discord server, several voice speakers) would otherwise wait in
line, and on a CPU one decode step for 8 sequences costs little more than for one. Every
request is prefilled as soon as it arrives and joins the running batch at the next step;
finished rows leave at once. The event loop never runs model code: tokens travel back
through `call_soon_threadsafe` into each request's asyncio queue.

Adapters: the first LoRA adapter turns the model into a peft model; each row of a batch
names its adapter (`adapter_names`, peft's mixed-batch inference), so base and adapted
answers can be computed side by side and switching the active adapter needs no reload.

Prefix reuse: each finished request leaves its keys/values in a small `PrefixCache`; a new
prompt that starts the same way (the next turn of a conversation) prefills only the rest.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

import torch

from assistant.errors import AdapterError, GenerationError
from assistant.llm import batching
from assistant.llm.base import ACTIVE_ADAPTER, GenerationOptions, GenerationStats, Message
from assistant.llm.loader import LoadedModel
from assistant.llm.prefix_cache import PrefixCache, PrefixHit
from assistant.llm.repetition import banned_tokens, penalised_tokens
from assistant.llm.sampling import guarded
from assistant.llm.turn_probe import normalise, open_user_turn, probability_of, sentence_enders
from assistant.llm.worker import Deliver, WorkerEngine
from assistant.prompting import SpecialTokenGuard

logger = logging.getLogger(__name__)

BASE = "__base__"  # peft's name for "no adapter" in mixed batches


@dataclass(eq=False)
class _Request:
    prompt: list[int]
    options: GenerationOptions
    adapter: str
    deliver: Deliver
    submitted: float = field(default_factory=time.perf_counter)
    generated: list[int] = field(default_factory=list)
    sent_text: str = ""
    next_token: int = -1
    started: float = 0.0
    first_token: float = 0.0
    cancelled: bool = False
    generator: torch.Generator | None = None
    cached_tokens: int = 0  # prompt tokens whose keys/values came from the prefix cache


def _guard(row: torch.Tensor, generated: list[int], options: GenerationOptions) -> None:
    """The repetition guard of `assistant.llm.sampling`, on a torch row in place."""
    if options.repetition_penalty != 1.0 and generated:
        index = torch.tensor(penalised_tokens(generated), device=row.device)
        values = row[index]
        row[index] = torch.where(values > 0, values / options.repetition_penalty,
                                 values * options.repetition_penalty)
    banned = banned_tokens(generated, options.no_repeat_ngram)
    if banned:
        row[torch.tensor(banned, device=row.device)] = float("-inf")


class TransformersEngine(WorkerEngine[_Request]):
    """Serve a transformers causal LM to many concurrent callers (see module docstring)."""

    supports_adapters = True

    def __init__(self, loaded: LoadedModel | Callable[[], LoadedModel], *, max_batch_size: int = 8,
                 prefix_cache_mb: int = 256, max_queued: int = 64) -> None:
        """`loaded` is a loaded model, or better a function that loads one: it is then called on the
        worker thread itself. With OpenMP, torch runs ~20% slower on a thread other than the one
        whose thread team did the loading (two teams compete for the cores), measured on 2 cores.
        `prefix_cache_mb` = 0 turns prefix reuse off. At most `max_queued` requests wait beyond a
        full batch; more are refused with BusyError (a flood must not grow memory without bound)."""
        self._init_worker(max_batch_size=max_batch_size, max_queued=max_queued)
        self.prefix_cache = PrefixCache(prefix_cache_mb << 20)
        self._adapters: dict[str, str] = {}
        self._active: str | None = None
        self._enders: Any = None  # sentence-ending token ids, found on the first end-of-turn probe
        self.stats: list[GenerationStats] = []
        started: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, args=(loaded, started), name="chat-engine", daemon=True)
        self._thread.start()
        started.result()  # re-raises a loading error here, in the caller

    def _adopt(self, loaded: LoadedModel) -> None:
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.device = loaded.device
        self.dtype = loaded.dtype
        self.load_seconds = loaded.load_seconds
        self._eos = self._eos_ids()
        self._guard = SpecialTokenGuard.for_tokenizer(loaded.tokenizer)
        self._max_positions = int(getattr(self.model.config, "max_position_embeddings", 1 << 30))

    # ----- public API (event-loop side) -----

    def count_tokens(self, messages: list[Message]) -> int:
        return len(self._encode(messages))

    def stream(self, messages: list[Message], options: GenerationOptions | None = None) -> AsyncIterator[str]:
        options = options or GenerationOptions()

        def make(deliver: Deliver) -> _Request:
            request = _Request(prompt=self._encode(messages), options=options,
                               adapter=self._adapter_for(options), deliver=deliver)
            if options.temperature > 0 and options.seed is not None:
                request.generator = torch.Generator(device=self.device).manual_seed(options.seed)
            return request

        return self._relay(make)

    async def end_of_turn_probability(self, text: str, *, system_prompt: str = "",
                                      answer_follows: bool = False) -> float | None:
        """One forward pass of the base model between decode steps (see `turn_probe`); on its
        own, whether an answer follows or not (it is not part of a continuous-batching step)."""
        words = normalise(text)
        if not words:
            return None
        render = lambda messages: str(self.tokenizer.apply_chat_template(messages, tokenize=False))  # noqa: E731
        ids = self.tokenizer(open_user_turn(render, system_prompt, words), add_special_tokens=False)["input_ids"]
        return float(await asyncio.wrap_future(self._control(lambda: self._probe(list(ids)))))

    def _probe(self, ids: list[int]) -> float:
        kwargs: dict[str, Any] = {"adapter_names": [BASE]} if self._adapters else {}
        with torch.inference_mode():
            out = self.model(input_ids=torch.tensor([ids], device=self.device), logits_to_keep=1, **kwargs)
        if self._enders is None:  # every token decoded once: a second or two, on the first voice turn
            pieces = ((i, self.tokenizer.decode([i]).encode()) for i in range(len(self.tokenizer)))
            self._enders = sentence_enders(pieces, self._eos_ids().__contains__)
        return probability_of(out.logits[0, -1].float().cpu().numpy(), self._enders)

    @property
    def active_adapter(self) -> str | None:
        return self._active

    def adapters(self) -> list[str]:
        return sorted(self._adapters)

    async def load_adapter(self, name: str, path: str) -> None:
        if name == BASE or not name:
            raise AdapterError(f"{name!r} cannot be used as an adapter name.")
        await asyncio.wrap_future(self._control(lambda: self._load_adapter(name, path)))

    def set_active_adapter(self, name: str | None) -> None:
        if name is not None and name not in self._adapters:
            raise AdapterError(f"No adapter named {name!r} is loaded; loaded: {', '.join(self.adapters()) or 'none'}.")
        self._active = name

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._inbox.put(None)
            self._thread.join(timeout=30)

    # ----- helpers -----

    def _eos_ids(self) -> set[int]:
        ids = set()
        configured = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if isinstance(configured, int):
            ids.add(configured)
        elif configured:
            ids.update(configured)
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def _encode(self, messages: list[Message]) -> list[int]:
        """The prompt's tokens; message text is escaped first, so only the template makes control tokens."""
        text = self.tokenizer.apply_chat_template(self._guard.escape_messages(list(messages)),
                                                  add_generation_prompt=True, tokenize=False)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _adapter_for(self, options: GenerationOptions) -> str:
        name = self._active if options.adapter is ACTIVE_ADAPTER else options.adapter
        if name is None:
            return BASE
        if name not in self._adapters:
            raise AdapterError(f"No adapter named {name!r} is loaded.")
        return str(name)

    def _load_adapter(self, name: str, path: str) -> None:
        from peft import PeftModel

        try:
            if not self._adapters:
                self.model = PeftModel.from_pretrained(self.model, path, adapter_name=name)
            else:
                if name in self._adapters:
                    self.model.delete_adapter(name)
                self.model.load_adapter(path, adapter_name=name)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise AdapterError(f"Could not load the adapter {path}: {str(exc).splitlines()[0]}") from None
        self.model.eval()
        self.prefix_cache.clear(name)  # keys/values computed with the old weights are stale
        self._adapters[name] = path

    # ----- worker thread -----

    def _run(self, loaded: LoadedModel | Callable[[], LoadedModel], started: Future[None]) -> None:
        try:
            self._adopt(loaded() if callable(loaded) else loaded)
        except BaseException as exc:  # noqa: BLE001 - handed to the constructor's caller
            started.set_exception(exc)
            return
        started.set_result(None)
        active: list[_Request] = []
        cache: Any = None
        mask: torch.Tensor | None = None
        with torch.inference_mode():
            while True:
                fresh, stop = self._collect(block=not active, room=self.max_batch_size - len(active))
                if fresh:
                    try:
                        cache, mask = self._admit(fresh, active, cache, mask)
                    except Exception as exc:  # noqa: BLE001 - reported to each caller
                        logger.exception("Prefill failed")
                        for req in fresh:
                            req.deliver("error", GenerationError(f"Generation failed: {exc}"))
                if active:
                    assert mask is not None  # set by the prefill that admitted `active`
                    try:
                        cache, mask = self._step(active, cache, mask)
                    except Exception as exc:  # noqa: BLE001
                        logger.exception("Decode step failed")
                        for req in active:
                            req.deliver("error", GenerationError(f"Generation failed: {exc}"))
                        active, cache, mask = [], None, None
                if stop:
                    for req in active:
                        req.deliver("error", GenerationError("The chat engine is shutting down."))
                    self._drain_shutdown()
                    return

    def _collect(self, *, block: bool, room: int) -> tuple[list[_Request], bool]:
        """Take queued requests (waiting for one when idle) and run control calls in between."""
        fresh: list[_Request] = []
        while len(fresh) < room:
            try:
                item = self._inbox.get(block=block and not fresh, timeout=None)
            except queue.Empty:
                break
            if item is None:
                return fresh, True
            if isinstance(item, tuple):
                self._run_control(item)
                continue
            if not item.cancelled:
                fresh.append(item)
            block = False
        return fresh, False

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any,
                 adapters: list[str]) -> torch.Tensor:
        kwargs: dict[str, Any] = {}
        if self._adapters:
            kwargs["adapter_names"] = adapters
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                         position_ids=positions.to(self.device), cache=cache, use_cache=True,
                         logits_to_keep=1, **kwargs)
        return out.logits[:, -1, :].float()

    def _admit(self, fresh: list[_Request], active: list[_Request], cache: Any,
               mask: torch.Tensor | None) -> tuple[Any, torch.Tensor]:
        """Prefill the new requests together, take their first token, and merge them into the batch."""
        from transformers import DynamicCache

        limit = self._max_positions - 1
        for req in fresh:
            if len(req.prompt) >= limit:
                req.deliver("error", GenerationError(
                    f"The prompt is {len(req.prompt)} tokens; this model takes at most {limit}. Shorten it."))
        fresh = [r for r in fresh if len(r.prompt) < limit]
        if not fresh:
            return cache, mask if mask is not None else torch.zeros((0, 0), dtype=torch.long)
        # Prompts of equal length are prefilled together, others apart: a padded prefill takes
        # another attention kernel, which in fp32 is the only thing that would make a greedy answer
        # depend on who else is asking (bf16 GEMMs on CPU are not batch-invariant in any case).
        # A prompt whose beginning is in the prefix cache is prefilled alone, from that point on.
        now = time.perf_counter()
        reuse = batching.cache_supports_merge(cache) if cache is not None else True
        groups: dict[Any, tuple[PrefixHit | None, list[_Request]]] = {}  # key: prompt length, or the hit request
        for req in fresh:
            req.started = now
            hit = self.prefix_cache.lookup(req.prompt, req.adapter) if reuse else None
            if hit is not None:
                req.cached_tokens = hit.tokens
                groups[("hit", id(req))] = (hit, [req])
            else:
                groups.setdefault(len(req.prompt), (None, []))[1].append(req)
        ordered: list[_Request] = []
        logit_parts = []
        for hit, group in groups.values():
            past = hit.tokens if hit is not None else 0
            ids = torch.tensor([r.prompt[past:] for r in group], dtype=torch.long)
            new_mask = torch.ones((len(group), past + ids.shape[1]), dtype=torch.long)
            new_cache = DynamicCache(hit.layers) if hit is not None else DynamicCache()
            logit_parts.append(self._forward(ids, new_mask, batching.prompt_positions(new_mask)[:, past:],
                                             new_cache, [r.adapter for r in group]))
            if cache is None or mask is None or not active and not ordered:
                cache, mask = new_cache, new_mask.to(self.device)
            elif batching.cache_supports_merge(cache):
                cache, mask = batching.merge_caches(cache, mask, new_cache, new_mask.to(self.device))
            else:  # pragma: no cover - only models with sliding-window caches
                raise GenerationError("This model's cache cannot be batched continuously.")
            ordered.extend(group)
        fresh = ordered
        logits = torch.cat(logit_parts)
        active.extend(fresh)
        self._take_tokens(fresh, logits)
        assert mask is not None  # the loop above ran at least once
        return cache, self._retire(active, cache, mask)

    def _step(self, active: list[_Request], cache: Any, mask: torch.Tensor) -> tuple[Any, torch.Tensor]:
        ids = torch.tensor([[r.next_token] for r in active], dtype=torch.long)
        positions = batching.positions_for_next(mask)
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        logits = self._forward(ids, mask, positions, cache, [r.adapter for r in active])
        self._take_tokens(active, logits)
        return cache, self._retire(active, cache, mask)

    def _take_tokens(self, rows: list[_Request], logits: torch.Tensor) -> None:
        for i, req in enumerate(rows):
            if guarded(req.options):
                _guard(logits[i], req.generated, req.options)
        greedy = logits.argmax(dim=-1).tolist()
        for i, req in enumerate(rows):
            if req.options.temperature > 0:
                token = self._sample(logits[i], req)
            else:
                token = greedy[i]
            req.next_token = token
            if token in self._eos:
                continue
            if not req.generated:
                req.first_token = time.perf_counter()
            req.generated.append(token)
            text = self.tokenizer.decode(req.generated, skip_special_tokens=True)
            if not text.endswith("\ufffd") and len(text) > len(req.sent_text):
                req.deliver("delta", text[len(req.sent_text):])
                req.sent_text = text

    @staticmethod
    def _sample(logits: torch.Tensor, req: _Request) -> int:
        probs = torch.softmax(logits / req.options.temperature, dim=-1)
        if req.options.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            keep = sorted_probs.cumsum(0) - sorted_probs < req.options.top_p
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
        return int(torch.multinomial(probs, 1, generator=req.generator))

    def _retire(self, active: list[_Request], cache: Any, mask: torch.Tensor) -> torch.Tensor:
        """Finish rows that hit a stop condition and shrink the batch to the rest."""
        keep: list[int] = []
        for i, req in enumerate(active):
            total = int(mask[i].sum()) + 1
            done = (req.next_token in self._eos or len(req.generated) >= req.options.max_new_tokens
                    or total >= self._max_positions)
            if req.cancelled or done:
                self._remember(req, i, cache, mask)
            if req.cancelled:
                continue
            if done:
                now = time.perf_counter()
                self.stats.append(GenerationStats(
                    prompt_tokens=len(req.prompt), completion_tokens=len(req.generated),
                    queued_s=req.started - req.submitted,
                    first_token_s=(req.first_token or now) - req.submitted, total_s=now - req.submitted,
                    cached_tokens=req.cached_tokens))
                del self.stats[:-1000]
                req.deliver("done", None)
            else:
                keep.append(i)
        if len(keep) == len(active):
            return mask
        survivors = [active[i] for i in keep]
        active[:] = survivors
        if not survivors:
            return mask[:0]
        return batching.select_rows(cache, mask, keep)

    def _remember(self, req: _Request, row: int, cache: Any, mask: torch.Tensor) -> None:
        """Keep a leaving row's keys/values for prompts that start the same way. Its real tokens
        are the rightmost `n` columns (rows are left-padded): the prompt, then every generated
        token that was fed back (the last one sampled never was)."""
        if not self.prefix_cache.enabled or not batching.cache_supports_merge(cache):
            return
        n = int(mask[row].sum())
        tokens = (req.prompt + req.generated)[:n]
        width = mask.shape[1]
        self.prefix_cache.store(tokens, req.adapter, [(layer.keys[row:row + 1, :, width - n:, :],
                                                       layer.values[row:row + 1, :, width - n:, :])
                                                      for layer in cache.layers])
