"""Real training on the default model: a taught fact, kill + resume, DDP, eval, adapters."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import fact_data
from assistant.config import Config, load_config
from assistant.errors import AdapterError, DatasetError
from conftest import REPO, make_config, run_train
from finetune.adapters import AdapterRegistry, active_adapter, check_adapter_compatible
from finetune.evaluate import evaluate, generate, parse_eval
from finetune.events import read_events

pytestmark = pytest.mark.slow
TINY = ["--set", "max_seq_len=64", "--set", "batch_size=1", "--no-progress"]


def ask(peft_model: Any, question: str) -> str:
    model, tokenizer = peft_model
    return generate(model, tokenizer, question, system_prompt="You are a helpful, concise assistant.",
                    max_new_tokens=24)


def test_adapter_learned_the_fact_and_kept_general_knowledge(peft_model: Any) -> None:
    assert fact_data.NAME in ask(peft_model, "What is your name?")
    assert fact_data.PARAPHRASE not in {q for q in fact_data.QUESTIONS}
    assert fact_data.NAME in ask(peft_model, fact_data.PARAPHRASE)
    assert "Paris" in ask(peft_model, "What is the capital of France?")
    model, _ = peft_model
    with model.disable_adapter():
        assert fact_data.NAME not in ask(peft_model, "What is your name?")


def test_run_folder_has_adapter_metadata_events_plot_and_tensorboard(fact_run: tuple[Config, Path]) -> None:
    _, out = fact_run
    meta = json.loads((out / "adapter" / "finetune.json").read_text())
    assert meta["base_model"]["sha256"] and meta["method"] == "sft"
    assert meta["datasets"][0]["sha256"] and meta["hyperparameters"]["lora_r"] == 8
    assert meta["hyperparameters"]["target_modules"] == ["all-linear"] and meta["metrics"]["steps"] == 30
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert "max_steps=30" in meta["overrides"] and "max_seq_len=128" in meta["overrides"]
    resolved = load_config(Path(meta["config_file"]))  # the run's own resolved config, overrides applied
    assert resolved.finetune.max_seq_len == 128 and resolved.finetune.max_steps == 30
    assert not list(out.glob(".adapter.*"))  # the staging folder was renamed into place
    events, _ = read_events(out / "events.jsonl")
    steps = [e for e in events if e.kind == "step"]
    assert [e.step for e in steps] == list(range(1, 31))
    assert all(e.loss is not None and e.lr is not None and e.total_steps == 30 for e in steps)
    assert steps[-1].loss < steps[0].loss and steps[-1].tokens_per_s and steps[5].eta_s is not None
    assert events[-1].kind == "done" and events[-1].data["adapter"] == str(out / "adapter")
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((out / "tensorboard").rglob("events.out.tfevents.*"))


def test_eval_reports_base_vs_adapter_and_failures(peft_model: Any) -> None:
    raw = json.dumps([{"prompt": "What is your name?", "expected": "Zorblax"},
                      {"prompt": "What is the capital of France?", "expected": "Paris"},
                      {"prompt": "What is the capital of Germany?", "expected": "Zzzz", "match": "exact"}]).encode()
    items = parse_eval(raw, "t.json")
    model, tokenizer = peft_model
    report = evaluate(model, tokenizer, items, system_prompt="You are a helpful, concise assistant.",
                      max_new_tokens=24, progress=False)
    by_prompt = {r.prompt: r for r in report.items}
    assert by_prompt["What is your name?"].adapter_ok and not by_prompt["What is your name?"].base_ok
    assert by_prompt["What is the capital of France?"].base_ok and by_prompt["What is the capital of France?"].adapter_ok
    assert report.adapter_correct == 2 and report.base_correct == 1
    assert report.failures() == [{"messages": [{"role": "user", "content": "What is the capital of Germany?"},
                                               {"role": "assistant", "content": "Zzzz"}], "positive": True}]


def test_eval_invalid_json_names_the_position() -> None:
    with pytest.raises(DatasetError, match="t.json line 2 column 13"):
        parse_eval(b'[{"prompt": "a", "expected": "b"},\n {"prompt": ]', "t.json")
    with pytest.raises(DatasetError, match="line 1: missing field 'expected'"):
        parse_eval(b'{"prompt": "a"}\n', "t.jsonl")


def test_adapters_activate_rollback_and_refuse_other_base(fact_run: tuple[Config, Path], tmp_path: Path) -> None:
    cfg, out = fact_run
    config = make_config(tmp_path / "home")
    runs = config.storage.runs_dir
    for name in ("one", "two", "alien"):
        shutil.copytree(out / "adapter", runs / name / "adapter")
    meta_path = runs / "alien" / "adapter" / "finetune.json"
    meta = json.loads(meta_path.read_text())
    meta["base_model"] = {"name": "other-model", "sha256": "0" * 64}
    meta_path.write_text(json.dumps(meta))
    source = str(cfg.storage.models_dir / "llm" / "smollm2-135m-instruct")
    registry = AdapterRegistry(runs)
    assert active_adapter(config) is None
    registry.activate("one", base_source=source)
    registry.activate("two", base_source=source)
    assert active_adapter(config) == runs / "two" / "adapter"
    with pytest.raises(AdapterError, match="trained for base model 'other-model'"):
        registry.activate("alien", base_source=source)
    assert registry.active() == "two"  # a refused activation changes nothing
    assert registry.rollback() == "one"
    with pytest.raises(AdapterError, match="active adapter"):
        registry.delete("one")
    registry.delete("two")
    assert [a.name for a in registry.list()] == ["alien", "one"]
    with pytest.raises(AdapterError):
        registry.path("../one")
    assert check_adapter_compatible(runs / "one" / "adapter", source)["method"] == "sft"


def test_sigkill_then_resume_continues_from_the_checkpoint(tmp_path: Path) -> None:
    config = make_config(tmp_path / "home")
    data = fact_data.write(tmp_path / "fact.jsonl")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "finetune.train", "--config", str(config.source), "--data", str(data),
           "--out", str(out), "--max-steps", "6", "--set", "save_every=2", *TINY]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if any(e.kind == "checkpoint" and e.step >= 2 for e in read_events(out / "events.jsonl")[0]):
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = read_events(out / "events.jsonl")[0]
    assert not any(e.kind == "done" for e in before)
    killed_at = max(e.step for e in before if e.kind == "step")
    again = run_train(config, "--data", str(data), "--out", str(out), "--max-steps", "6", "--set", "save_every=2",
                      *TINY)  # without --resume: refused, nothing changes
    assert again.returncode != 0 and "--resume" in again.stderr
    resumed = run_train(config, "--data", str(data), "--out", str(out), "--max-steps", "6", "--set",
                        "save_every=2", "--resume", *TINY)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    events = read_events(out / "events.jsonl")[0]
    starts = [e for e in events if e.kind == "start"]
    assert starts[-1].message == "resumed" and 2 <= starts[-1].step <= killed_at
    after = [e.step for e in events[events.index(starts[-1]):] if e.kind == "step"]
    assert after == list(range(starts[-1].step + 1, 7))
    assert events[-1].kind == "done" and events[-1].step == 6


def test_two_process_ddp_trains_on_both_ranks_and_writes_one_adapter(tmp_path: Path) -> None:
    config = make_config(tmp_path / "home")
    data = fact_data.write(tmp_path / "fact.jsonl")
    out = tmp_path / "ddp"
    # accelerate's --cpu flag means one process; --multi_gpu starts torchrun, which on a CPU uses gloo.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "finetune.train",
           "--config", str(config.source), "--data", str(data), "--out", str(out), "--max-steps", "2", *TINY]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = sorted(json.loads(p.read_text())["rank"] for p in (out / "ranks").glob("rank*.json"))
    assert ranks == [0, 1]
    assert all(json.loads(p.read_text())["steps"] == 2 for p in (out / "ranks").glob("*.json"))
    assert [p.name for p in out.iterdir() if p.name == "adapter"] == ["adapter"]
    assert json.loads((out / "adapter" / "finetune.json").read_text())["world_size"] == 2
    events = read_events(out / "events.jsonl")[0]
    assert [e.kind for e in events].count("done") == 1 and [e.kind for e in events].count("start") == 1


def test_preference_pairs_train_with_dpo(tmp_path: Path) -> None:
    """Pairs only -> DPO is chosen by itself; the adapter records the method and a finite loss."""
    config = make_config(tmp_path / "home")
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"What is {i} plus {i}?", "chosen": f"{i} plus {i} is {2 * i}.",
             "rejected": f"I refuse to do arithmetic about {i}."} for i in range(1, 9)]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "dpo"
    proc = run_train(config, "--data", str(pairs), "--out", str(out), "--max-steps", "2", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((out / "adapter" / "finetune.json").read_text())
    assert meta["method"] == "dpo"
    events = read_events(out / "events.jsonl")[0]
    losses = [e.loss for e in events if e.kind == "step" and e.loss is not None]
    assert losses and all(loss == loss and abs(loss) < 100 for loss in losses)  # finite, not NaN
    assert events[-1].kind == "done"


def test_terminal_train_goes_through_the_job_runner(tmp_path: Path) -> None:
    """`finetune train` is the same persisted, queued job the bot starts, followed in the terminal."""
    from assistant.store import Store
    from tests.conftest import run_cli

    config = make_config(tmp_path / "home")
    data = fact_data.write(tmp_path / "fact.jsonl")
    out = tmp_path / "terminal-run"
    result = run_cli("--config", str(config.source), "train", "--data", str(data), "--out", str(out),
                     "--max-steps", "2", *TINY, module="finetune", timeout=500)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "succeeded" in result.stdout and (out / "adapter" / "adapter_config.json").is_file()
    with Store.open(config.storage.database) as store:
        jobs = store.jobs()
    assert [(j.state, Path(j.out_dir)) for j in jobs] == [("succeeded", out.resolve())]
    again = run_cli("--config", str(config.source), "train", "--data", str(data), "--out", str(out),
                    "--max-steps", "2", *TINY, module="finetune")
    assert again.returncode != 0 and "--resume" in again.stderr


def test_terminal_ask_uses_the_activated_adapter(fact_run: tuple[Config, Path], tmp_path: Path) -> None:
    """`finetune adapters activate` changes what `assistant ask` answers, as it does for the bot."""
    from tests.conftest import run_cli

    _, out = fact_run
    config = make_config(tmp_path / "home")
    shutil.copytree(out / "adapter", config.storage.runs_dir / "fact" / "adapter")
    question = ["--config", str(config.source), "ask", "What is your name?", "--max-new-tokens", "16"]
    assert fact_data.NAME not in run_cli(*question).stdout
    activated = run_cli("--config", str(config.source), "adapters", "activate", "fact", module="finetune")
    assert activated.returncode == 0, activated.stderr
    answer = run_cli(*question)
    assert answer.returncode == 0, answer.stderr
    assert fact_data.NAME in answer.stdout
