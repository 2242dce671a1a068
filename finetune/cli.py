"""The `finetune` command: datasets, train, eval, adapters, merge, jobs.

Same conventions as `assistant`: `--config PATH` (default ./config.toml), heavy imports
inside handlers, and every AssistantError becomes one `error: ...` line and its exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from assistant.app import run_edge
from assistant.config import Config


def load_tokenizer(config: Config) -> Any:
    from transformers import AutoTokenizer

    from assistant.llm.catalog import resolve_model_source

    return AutoTokenizer.from_pretrained(resolve_model_source(config.model.name, config.storage.models_dir))


def open_store(config: Config) -> Any:
    from assistant.store import Store

    return Store.open(config.storage.database)


def manager(config: Config, store: Any, *, with_tokenizer: bool = True) -> Any:
    from finetune.datasets_store import DatasetManager

    return DatasetManager(config.storage.datasets_dir, store, tokenizer=load_tokenizer(config) if with_tokenizer else None,
                          max_seq_len=config.finetune.max_seq_len, system_prompt=config.model.system_prompt)


def cmd_datasets(args: argparse.Namespace, config: Config) -> int:
    from finetune.datasets_store import export_feedback
    from finetune.masking import preview, with_system

    with open_store(config) as store:
        mgr = manager(config, store, with_tokenizer=args.action in ("add", "show", "export-feedback"))
        if args.action == "add":
            info = mgr.add_file(Path(args.file), name=args.name, fmt=args.format, replace=args.replace)
            print(f"stored {info.name}: {info.rows} rows ({info.format}), {info.tokens} tokens, sha256 {info.sha256[:12]}")
        elif args.action == "list":
            selected = set(mgr.selected())
            for info in mgr.list():
                mark = "*" if info.name in selected else " "
                print(f"{mark} {info.name:32} {info.format:10} {info.rows:6} rows {info.tokens:8} tokens")
        elif args.action == "show":
            from finetune.data import sft_rows

            rows = sft_rows(mgr.load(args.name))
            row = rows[min(args.index, len(rows) - 1)]
            print(preview(mgr.tokenizer, with_system(row["messages"], config.model.system_prompt)))
            print("\n(trained tokens are between [[ and ]]: the assistant's replies only)")
        elif args.action == "archive":
            print(f"archived to {mgr.archive(args.name)}")
        elif args.action == "select":
            print("selected: " + ", ".join(mgr.select(args.names)))
        elif args.action == "export-feedback":
            for info in export_feedback(mgr, args.name):
                print(f"stored {info.name}: {info.rows} rows ({info.format})")
    return 0


def cmd_train(args: argparse.Namespace, config: Config) -> int:
    """Train through the job runner, the very path the bot's `train` takes, and follow it here.

    The job is persisted and queued like any other (one per device); Ctrl-C cancels it.
    """
    from finetune.jobs import JobRunner, JobSpec

    data = [str(Path(d).resolve()) if Path(d).exists() else d for d in args.data]
    spec = JobSpec(data=data, out=str(args.out.resolve()), max_steps=args.max_steps, epochs=args.epochs,
                   method=args.method, overrides=list(args.set), resume=args.resume, format=args.format)
    with open_store(config) as store:
        runner = JobRunner(config, store)
        job_id = runner.submit(spec)
        print(f"job {job_id}: training into {spec.out} (log: {args.out.resolve() / 'train.log'})", flush=True)
        if args.detach:
            print(f"(follow it with `finetune jobs watch {job_id}`)", flush=True)
            return 0
        try:
            return _follow_with_bar(runner, job_id, bar=not args.no_progress)
        except KeyboardInterrupt:
            print(f"job {job_id}: {runner.cancel(job_id).state}", flush=True)
            return 130


def _follow_with_bar(runner: Any, job_id: str, *, bar: bool) -> int:
    from tqdm import tqdm

    from finetune.events import format_progress

    async def follow() -> str:
        state, progress = "failed", None
        async for event in runner.watch(job_id):
            if event.kind == "step":
                if not bar:
                    print(format_progress(event), flush=True)
                    continue
                if progress is None:
                    progress = tqdm(total=event.total_steps or None, unit="step", desc="training")
                progress.n = event.step
                progress.set_postfix(loss=f"{event.loss:.3f}" if event.loss is not None else "?",
                                     tok_s=f"{event.tokens_per_s:.0f}" if event.tokens_per_s else "?")
            elif event.kind in ("error", "done") and event.message:
                print(event.message, flush=True)
            elif event.kind == "state":
                state = event.message
        if progress is not None:
            progress.close()
        job = runner.status(job_id)
        print(f"job {job_id}: {state}" + (f" ({job.error})" if job.error else ""), flush=True)
        if state == "succeeded":
            print(f"adapter: {Path(job.out_dir) / 'adapter'}", flush=True)
        return state

    return 0 if asyncio.run(follow()) == "succeeded" else 1


def cmd_feedback(args: argparse.Namespace, config: Config) -> int:
    """The review queue, as the bot's `review` shows it: only approved items are ever trained on."""
    with open_store(config) as store:
        if args.action == "list":
            status = None if args.status == "all" else args.status
            items = store.review_items(status=status, user_id=args.user)
            for item in items:
                what = item.correction if item.kind == "reaction" else f"→ {item.correction}"
                print(f"{item.item:6} {item.status:8} user {item.user_id or '?':20} Q: {item.prompt[:60]!r} "
                      f"A: {item.reply[:40]!r} {what[:80]}")
            print(f"{len(items)} item(s)")
        elif args.action in ("approve", "reject"):
            if args.user:
                if args.action != "approve":
                    from assistant.errors import ReviewError

                    raise ReviewError("--user works with approve only; reject items by id.")
                print(f"approved {store.approve_user(args.user, reviewer='terminal')} item(s) by {args.user}")
            else:
                state = {"approve": "approved", "reject": "rejected"}[args.action]
                print(f"{state} {store.set_review(args.items, state, reviewer='terminal')} item(s)")
    return 0


def cmd_gate(args: argparse.Namespace, config: Config, adapter: Path) -> int:
    """`finetune eval --control`: the bot's evaluation gate, on an engine of our own."""
    from assistant.llm import create_backend
    from assistant.memory import approved_facts, build_memory
    from finetune.gate import load_items, parse_items, run_gate, save_report

    run_dir = adapter.parent
    items = load_items(run_dir, config.storage.control_set)
    if args.data:
        items += parse_items(_read(Path(args.data)), Path(args.data).name)
    with open_store(config) as store:
        memory = build_memory(config.memory, config.storage.models_dir, lambda: approved_facts(store))
    engine = create_backend(config.model, config.storage.models_dir)
    name = run_dir.name

    async def gate() -> Any:
        await engine.load_adapter(name, str(adapter))
        return await run_gate(engine, name, items, system_prompt=config.model.system_prompt, notes=memory.notes,
                              min_control_kept=config.finetune.min_control_kept)

    try:
        report = asyncio.run(gate())
    finally:
        close = getattr(engine, "close", None)
        if callable(close):
            close()
    for a in report.answers:
        mark = "kept" if a.group == "control" and a.kept else ("✓" if a.candidate_ok else "✗")
        print(f"[{a.group}] {a.prompt}\n    expected: {a.expected}\n    base   : {a.base}\n    adapter: {mark} {a.candidate}")
    print(report.summary())
    print(f"written to {save_report(run_dir, report)}")
    return 0 if report.passed else 1


def cmd_eval(args: argparse.Namespace, config: Config) -> int:
    from finetune.data import to_jsonl

    if args.control:
        return cmd_gate(args, config, _adapter_dir(config, args.adapter))
    if not args.data:
        from assistant.errors import DatasetError

        raise DatasetError("Pass --data TEST_FILE, or --control for the evaluation gate.")
    from finetune.evaluate import evaluate, load_for_eval, parse_eval

    items = parse_eval(_read(Path(args.data)), Path(args.data).name, default_match=args.match)
    adapter = _adapter_dir(config, args.adapter)
    model, tokenizer = load_for_eval(config, adapter)
    report = evaluate(model, tokenizer, items, system_prompt=config.model.system_prompt,
                      max_new_tokens=args.max_new_tokens)
    for r in report.items:
        print(f"- {r.prompt}\n    expected: {r.expected}\n    base    : {'✓' if r.base_ok else '✗'} {r.base}\n"
              f"    adapter : {'✓' if r.adapter_ok else '✗'} {r.adapter}")
    print(f"base {report.base_correct}/{len(report.items)}, adapter {report.adapter_correct}/{len(report.items)}")
    if args.report:
        Path(args.report).write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
    failures = report.failures()
    if failures and args.failures_name:
        with open_store(config) as store:
            info = manager(config, store).add_bytes(to_jsonl(failures), name=args.failures_name,
                                                    source="eval failures", fmt="messages", replace=True)
            print(f"{info.rows} failures stored as dataset {info.name} (correct them, then train on it)")
    return 0


def _read(path: Path) -> bytes:
    from assistant.errors import DatasetError

    try:
        return path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"Cannot read {path} ({exc.strerror}).") from None


def _adapter_dir(config: Config, value: str) -> Path:
    from finetune.adapters import AdapterRegistry

    path = Path(value)
    if (path / "adapter_config.json").is_file():
        return path
    return AdapterRegistry(config.storage.runs_dir).path(value)


def cmd_adapters(args: argparse.Namespace, config: Config) -> int:
    from assistant.llm.catalog import resolve_model_source
    from finetune.adapters import AdapterRegistry

    registry = AdapterRegistry(config.storage.runs_dir)
    if args.action == "list":
        active = registry.active()
        for info in registry.list():
            metrics = info.metadata.get("metrics", {})
            print(f"{'*' if info.name == active else ' '} {info.name:32} base {info.base:28} "
                  f"steps {metrics.get('steps', '?')} loss {metrics.get('final_loss', '?')}")
    elif args.action == "show":
        print(json.dumps(registry.show(args.name).metadata, indent=2))
    elif args.action == "activate":
        source = resolve_model_source(config.model.name, config.storage.models_dir)
        name = None if args.name == "none" else args.name
        print(f"active: {registry.activate(name, base_source=source, force=args.force) or 'base model'}")
    elif args.action == "rollback":
        print(f"active: {registry.rollback() or 'base model'}")
    elif args.action == "delete":
        registry.delete(args.name)
        print(f"deleted {args.name}")
    return 0


def cmd_merge(args: argparse.Namespace, config: Config) -> int:
    from finetune.adapters import merge

    print(f"merged model written to {merge(config, args.name, Path(args.out))}")
    return 0


def cmd_jobs(args: argparse.Namespace, config: Config) -> int:
    from finetune.jobs import JobRunner

    with open_store(config) as store:
        runner = JobRunner(config, store)
        if args.action == "list":
            for job in runner.jobs():
                print(f"{job.id}  {job.state:9}  {job.out_dir}")
        elif args.action == "status":
            job = runner.status(args.id)
            print(json.dumps({"id": job.id, "state": job.state, "out_dir": job.out_dir, "error": job.error,
                              "result": job.result}, indent=2))
        elif args.action == "cancel":
            print(f"job {args.id}: {runner.cancel(args.id).state}")
        elif args.action == "watch":
            return _follow_with_bar(runner, args.id, bar=not args.no_progress)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="finetune", description="Teach the assistant: datasets, LoRA training, "
                                     "evaluation and adapters.")
    parser.add_argument("--config", type=Path, default=None, help="config file (default: ./config.toml if present)")
    parser.add_argument("--debug", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_data_commands(sub)
    _add_model_commands(sub)
    return parser


def _add_data_commands(sub: Any) -> None:
    """`datasets`, `feedback` and `train`: what the assistant learns from."""
    from finetune.train import make_parser

    ds = sub.add_parser("datasets", help="managed datasets").add_subparsers(dest="action", required=True)
    add = ds.add_parser("add", help="validate and store a dataset file")
    add.add_argument("file")
    add.add_argument("--name", required=True)
    add.add_argument("--format", default="auto", help="auto, messages, alpaca, sharegpt, completion, preference")
    add.add_argument("--replace", action="store_true", help="replace a dataset of the same name")
    ds.add_parser("list", help="list datasets (* = selected)")
    show = ds.add_parser("show", help="preview an example with the trained tokens marked")
    show.add_argument("name")
    show.add_argument("--index", type=int, default=0)
    ds.add_parser("archive", help="pack into datasets/archive/ and remove").add_argument("name")
    ds.add_parser("select", help="choose what the next job trains on").add_argument("names", nargs="+")
    ds.add_parser("export-feedback", help="stored corrections and reactions → datasets").add_argument(
        "--name", required=True)
    for p in ds.choices.values():
        p.set_defaults(handler=cmd_datasets)

    fb = sub.add_parser("feedback", help="review corrections and 👍/👎 (pending → approved/rejected)").add_subparsers(
        dest="action", required=True)
    ls = fb.add_parser("list", help="the review queue")
    ls.add_argument("--status", default="pending", choices=("pending", "approved", "rejected", "all"))
    ls.add_argument("--user", default=None, help="only this user's items (Discord user id)")
    for action in ("approve", "reject"):
        p = fb.add_parser(action, help=f"{action} items by id (c12 = correction, r5 = reaction)")
        p.add_argument("items", nargs="*")
        p.add_argument("--user", default=None, help="approve every pending item of this user")
    for p in fb.choices.values():
        p.set_defaults(handler=cmd_feedback)

    train = make_parser(sub.add_parser("train", help="train a LoRA adapter (a queued job, followed here)"))
    train.add_argument("--detach", action="store_true", help="queue the job and return (follow: `jobs watch ID`)")
    train.set_defaults(handler=cmd_train)


def _add_model_commands(sub: Any) -> None:
    """`eval`, `adapters`, `merge` and `jobs`: checking and using what was trained."""
    ev = sub.add_parser("eval", help="compare base and adapter on prompts with expected answers")
    ev.add_argument("--data", default=None, help="test items (required unless --control)")
    ev.add_argument("--control", action="store_true", help="the evaluation gate: the run's taught items and "
                    "paraphrases + storage.control_set, base and adapter in one batch; writes gate.json")
    ev.add_argument("--adapter", required=True, help="adapter folder or run name")
    ev.add_argument("--match", default="contains", choices=("exact", "contains", "normalised", "keywords"))
    ev.add_argument("--max-new-tokens", type=int, default=48)
    ev.add_argument("--failures-name", default=None, help="store the adapter's failures as this dataset")
    ev.add_argument("--report", default=None, help="write the full report as JSON here")
    ev.set_defaults(handler=cmd_eval)

    ad = sub.add_parser("adapters", help="list, show, activate, rollback, delete").add_subparsers(
        dest="action", required=True)
    ad.add_parser("list")
    for action in ("show", "activate", "delete"):
        ad.add_parser(action).add_argument("name", help="run name ('none' with activate = base model)")
    ad.choices["activate"].add_argument("--force", action="store_true",
                                        help="activate although the evaluation gate failed")
    ad.add_parser("rollback")
    for p in ad.choices.values():
        p.set_defaults(handler=cmd_adapters)

    mg = sub.add_parser("merge", help="write base + adapter as one full model")
    mg.add_argument("name")
    mg.add_argument("--out", required=True)
    mg.set_defaults(handler=cmd_merge)

    jb = sub.add_parser("jobs", help="training jobs through the job runner").add_subparsers(
        dest="action", required=True)
    jb.add_parser("list")
    for action in ("status", "cancel"):
        jb.add_parser(action).add_argument("id")
    watch = jb.add_parser("watch", help="follow a job's progress until it ends")
    watch.add_argument("id")
    watch.add_argument("--no-progress", action="store_true", help="one line per step instead of a bar")
    for p in jb.choices.values():
        p.set_defaults(handler=cmd_jobs)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_edge(lambda config: args.handler(args, config), config_path=args.config, debug=args.debug)


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
