"""The batched chat engine on the real default model."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from assistant.errors import AdapterError, BusyError, GenerationError
from assistant.llm.base import GenerationOptions, Message
from assistant.llm.engine import TransformersEngine
from assistant.llm.loader import choose_device, choose_dtype, load_causal_lm
from tests.conftest import run_cli

pytestmark = pytest.mark.slow

QUESTIONS = ["What is the capital of France?", "Name three colors.", "What is 2+2?", "Write a haiku about the sea.",
             "Who wrote Hamlet?", "What is the boiling point of water?", "Tell me a joke.", "What is Python?"]


def ask(question: str) -> list[Message]:
    return [{"role": "system", "content": "You are a helpful, concise assistant."},
            {"role": "user", "content": question}]


@pytest.fixture(scope="module")
def engine(models_dir: Path) -> Iterator[TransformersEngine]:
    """fp32: on this CPU fp32 kernels are batch-invariant, so batched greedy answers equal serial ones.
    Prefix reuse is off here so the identity tests measure batching alone (it has its own test)."""
    eng = TransformersEngine(lambda: load_causal_lm("smollm2-135m-instruct", models_dir, dtype="float32"),
                             prefix_cache_mb=0)
    yield eng
    eng.close()


def test_device_and_dtype_choice() -> None:
    assert choose_device("auto", cuda_available=False) == "cpu"
    assert choose_device("auto", cuda_available=True) == "cuda"
    assert choose_dtype("auto", "cpu", cpu_bf16=True, cuda_bf16=False) == "bfloat16"
    assert choose_dtype("auto", "cpu", cpu_bf16=False, cuda_bf16=False) == "float32"
    assert choose_dtype("auto", "cuda", cpu_bf16=False, cuda_bf16=False) == "float16"
    assert choose_dtype("float32", "cuda", cpu_bf16=True, cuda_bf16=True) == "float32"


def test_a_loading_error_reaches_the_caller(tmp_path: Path) -> None:
    from assistant.errors import ModelNotAvailableError

    with pytest.raises(ModelNotAvailableError, match="not provisioned"):
        TransformersEngine(lambda: load_causal_lm("smollm2-135m-instruct", tmp_path))


def test_ask_cli_answers_paris() -> None:
    result = run_cli("ask", "What is the capital of France?")
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


async def test_eight_concurrent_requests_equal_their_serial_answers(engine: TransformersEngine) -> None:
    options = GenerationOptions(max_new_tokens=24)
    serial = [await engine.complete(ask(q), options) for q in QUESTIONS]
    before = len(engine.stats)
    concurrent = await asyncio.gather(*[engine.complete(ask(q), options) for q in QUESTIONS])
    assert concurrent == serial
    assert all(answer.strip() for answer in serial)
    assert "Paris" in serial[0]
    assert len(engine.stats) - before == len(QUESTIONS)


async def test_requests_joining_mid_generation_still_match(engine: TransformersEngine) -> None:
    options = GenerationOptions(max_new_tokens=16)
    alone = [await engine.complete(ask(q), options) for q in QUESTIONS[:3]]

    async def late(i: int) -> str:
        await asyncio.sleep(0.15 * i)  # arrive while the others are decoding
        return await engine.complete(ask(QUESTIONS[i]), options)

    assert await asyncio.gather(*[late(i) for i in range(3)]) == alone


async def test_a_conversation_prefills_only_its_new_turn_and_answers_the_same(
        engine: TransformersEngine, models_dir: Path) -> None:
    from assistant.conversation import Conversation

    cached = TransformersEngine(lambda: load_causal_lm("smollm2-135m-instruct", models_dir, dtype="float32"))
    try:
        turns = ["What is the capital of France?", "And of Italy?", "Which of the two is bigger?",
                 "Name a river in the first one."]
        answers: dict[str, list[str]] = {}
        for label, eng in (("reused", cached), ("full", engine)):
            talk = Conversation(eng, system_prompt="You are a helpful, concise assistant.", reply_tokens=24)
            answers[label] = ["".join([d async for d in talk.reply(t)]) for t in turns]
        assert answers["reused"] == answers["full"]
        later = cached.stats[-3:]
        assert all(s.cached_tokens > 0 for s in later)
        # only the new turn (and the template around it) was prefilled
        assert all(s.prompt_tokens - s.cached_tokens < 30 for s in later), later
        assert cached.prefix_cache.hits == 3
    finally:
        cached.close()


async def test_stream_yields_deltas_that_add_up(engine: TransformersEngine) -> None:
    options = GenerationOptions(max_new_tokens=24)
    deltas = [d async for d in engine.stream(ask("Write a haiku about the sea."), options)]
    assert len(deltas) > 5
    assert "".join(deltas) == await engine.complete(ask("Write a haiku about the sea."), options)


async def test_max_new_tokens_and_cancellation(engine: TransformersEngine) -> None:
    text = await engine.complete(ask("Tell me a long story about a dragon."), GenerationOptions(max_new_tokens=5))
    assert engine.stats[-1].completion_tokens <= 5 and text
    stream: AsyncIterator[str] = engine.stream(ask("Count from one to one hundred."),
                                               GenerationOptions(max_new_tokens=200))
    async for _ in stream:
        break
    await stream.aclose()  # type: ignore[attr-defined]
    # The engine keeps serving after a consumer walked away.
    assert "Paris" in await engine.complete(ask("What is the capital of France?"), GenerationOptions(max_new_tokens=12))


async def test_sampling_is_seeded(engine: TransformersEngine) -> None:
    options = GenerationOptions(max_new_tokens=20, temperature=0.9, top_p=0.9, seed=7)
    a = await engine.complete(ask("Tell me a joke."), options)
    b = await engine.complete(ask("Tell me a joke."), options)
    assert a == b and a


async def test_prompt_longer_than_the_model_is_refused(engine: TransformersEngine) -> None:
    huge = "word " * 9000
    with pytest.raises(GenerationError, match="at most"):
        await engine.complete(ask(huge), GenerationOptions(max_new_tokens=4))


async def test_adapters_swap_without_reload_and_mix_in_one_batch(models_dir: Path, tmp_path: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model

    loaded = load_causal_lm("smollm2-135m-instruct", models_dir, dtype="float32")
    torch.manual_seed(0)
    lora = get_peft_model(loaded.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    base_model = lora.unload()
    loaded.model = base_model
    eng = TransformersEngine(loaded)
    try:
        options = GenerationOptions(max_new_tokens=20)
        base = await eng.complete(ask("What is 2+2?"), options)
        await eng.load_adapter("random", str(tmp_path / "adapter"))
        eng.set_active_adapter("random")
        adapted = await eng.complete(ask("What is 2+2?"), options)
        assert adapted != base
        both = await asyncio.gather(
            eng.complete(ask("What is 2+2?"), GenerationOptions(max_new_tokens=20, adapter=None)),
            eng.complete(ask("What is 2+2?"), options))
        assert list(both) == [base, adapted]
        eng.set_active_adapter(None)
        assert await eng.complete(ask("What is 2+2?"), options) == base
        with pytest.raises(AdapterError, match="No adapter named"):
            eng.set_active_adapter("missing")
        with pytest.raises(AdapterError, match="Could not load"):
            await eng.load_adapter("broken", str(tmp_path / "nowhere"))
    finally:
        eng.close()


def test_a_caller_whose_event_loop_closes_mid_answer_does_not_kill_the_engine(engine: TransformersEngine) -> None:
    """A bot test or a client that shuts its loop down while a reply is generating."""

    async def start_and_abandon() -> None:
        stream = engine.stream(ask("Count from one to one hundred."), GenerationOptions(max_new_tokens=60))
        await stream.__anext__()  # generation is running now

    loop = asyncio.new_event_loop()
    loop.run_until_complete(start_and_abandon())
    loop.close()  # the request is still in the batch; its deliveries now fail

    async def still_serving() -> str:
        return await asyncio.wait_for(
            engine.complete(ask("What is the capital of France?"), GenerationOptions(max_new_tokens=12)), 120)

    assert "Paris" in asyncio.run(still_serving())
    assert engine._thread.is_alive()
    # The abandoned request's `finally` never runs (its loop is closed): it must leave the count
    # of outstanding requests from the worker side, or each such caller shrinks the engine for good.
    for _ in range(200):
        if engine._outstanding == 0:
            break
        time.sleep(0.05)
    assert engine._outstanding == 0


async def test_a_full_queue_refuses_new_requests_instead_of_growing(engine: TransformersEngine) -> None:
    """A flood gets BusyError at once for everything past a full batch plus `max_queued`;
    the requests that were let in are all answered."""
    async def one(i: int) -> str | None:
        try:
            return await engine.complete(ask(QUESTIONS[i % len(QUESTIONS)]), GenerationOptions(max_new_tokens=4))
        except BusyError:
            return None

    for _ in range(200):  # requests cancelled by earlier tests leave the engine asynchronously
        if engine._outstanding == 0:
            break
        await asyncio.sleep(0.05)
    engine.max_queued = 2
    try:
        results = await asyncio.gather(*(one(i) for i in range(engine.max_batch_size + 6)))
    finally:
        engine.max_queued = 64
    # At most a full batch plus max_queued are let in (a request still leaving from before may take one more place).
    assert results.count(None) >= 4
    assert all(r for r in results if r is not None)
    for _ in range(200):  # the last finished request leaves the count from the worker thread
        if engine._outstanding == 0:
            break
        await asyncio.sleep(0.05)
    assert engine._outstanding == 0


async def test_the_end_of_turn_probe_matches_the_llama_cpp_reading(engine: TransformersEngine) -> None:
    """The same question as the llama.cpp engine answers for a voice turn (tests/test_llamacpp.py):
    whether the words are a finished message. A fragment gets almost nothing, a question a real chance."""
    system = "You are a helpful, concise assistant."
    fragments = [await engine.end_of_turn_probability(t, system_prompt=system)
                 for t in ("What is the capital of", "Remind me to call my", "Which season comes.")]
    finished = [await engine.end_of_turn_probability(t, system_prompt=system)
                for t in ("What is the capital of France?", "Who are you?")]
    assert all(p is not None and p < 0.001 for p in fragments), fragments
    assert all(p is not None and p > 0.1 for p in finished), finished
    assert await engine.end_of_turn_probability("...") is None
    assert await engine.complete(ask("What is the capital of France?"), GenerationOptions(max_new_tokens=8))


async def test_a_probe_given_up_before_it_runs_does_not_kill_the_engine(engine: TransformersEngine) -> None:
    """A voice turn that moves on cancels its end-of-turn probe. The probe waits for the answer
    being generated; the worker then found a cancelled future, raised setting its result, and
    died, and every later answer with it (the live-voice tests failed one after another)."""
    answer = asyncio.ensure_future(engine.complete(ask("Write a haiku about the sea."),
                                                   GenerationOptions(max_new_tokens=24)))
    await asyncio.sleep(0.2)  # the answer is decoding: the probe queues behind a step
    probe = asyncio.ensure_future(engine.end_of_turn_probability("What is the capital of"))
    await asyncio.sleep(0)
    probe.cancel()
    await asyncio.wait_for(answer, 60)  # a dead worker never answers
    assert (await asyncio.wait_for(engine.complete(ask("What is the capital of France?"),
                                                   GenerationOptions(max_new_tokens=8)), 60)).strip()
    assert 0.0 <= (await engine.end_of_turn_probability("What is the capital of France?") or 0.0) <= 1.0
