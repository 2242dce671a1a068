"""`finetune train`: LoRA fine-tuning (SFT, or DPO when the data are preference pairs).

The same command runs everywhere:

    finetune train --data names.jsonl --out runs/name --max-steps 30            # terminal, CPU or 1 GPU
    python -m finetune.train --data my-dataset --out runs/x --resume           # what the job runner starts
    accelerate launch --num_processes 2 -m finetune.train --data d --out runs/x  # several GPUs (DDP)

Why transformers' Trainer underneath: it already does gradient accumulation, schedules,
DDP under `accelerate launch`, TensorBoard, and checkpoints that resume with the same step
count and data order (it restores the RNG and skips the batches already seen). What we add:
assistant-only labels, packing without cross-contamination (see finetune/masking.py),
JSON-lines progress events, an adapter folder with metadata, and a loss curve.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import sys
import time
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from assistant.adapters import base_model_identity
from assistant.config import Config, FinetuneConfig, config_mapping, parse_config, to_toml
from assistant.provision import staging_dir
from assistant.errors import DatasetError, TrainingError
from assistant.names import is_valid_name
from finetune.data import Dataset, load_file
from finetune.datasets_store import DATA_FILE
from finetune.events import EVENTS_FILE, EventWriter, ProgressEvent, read_events
from finetune.teach import FEEDBACK

if TYPE_CHECKING:
    from assistant.llm.loader import LoadedModel

logger = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
CHECKPOINTS = "checkpoints"
METADATA = "finetune.json"
RUN_CONFIG = "run-config.toml"  # the resolved config of a run, overrides applied
PRECISION_DTYPE = {"auto": "auto", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def make_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="finetune train", description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True, metavar="FILE_OR_NAME",
                        help="dataset files or managed dataset names")
    parser.add_argument("--out", type=Path, required=True, help="run folder (adapter, checkpoints, logs)")
    parser.add_argument("--max-steps", type=int, default=None, help="optimizer steps (overrides epochs)")
    parser.add_argument("--epochs", type=float, default=None, help="passes over the data")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    parser.add_argument("--format", default="auto", help="dataset format when not auto-detected")
    parser.add_argument("--method", choices=("auto", "sft", "dpo"), default="auto",
                        help="auto: DPO when every dataset is preference pairs, else SFT")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a [finetune] setting, e.g. --set max_seq_len=128 (TOML value)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (events still written)")
    parser.add_argument("--managed", action="store_true",
                        help="every --data item is a managed dataset name, never a file (the job runner's mode)")
    return parser


def finetune_settings(base: FinetuneConfig, *, overrides: Sequence[str], max_steps: int | None,
                      epochs: float | None) -> FinetuneConfig:
    """Apply --set/--max-steps/--epochs with the same validation as config.toml."""
    raw: dict[str, Any] = {k: (list(v) if isinstance(v, list) else v) for k, v in dataclasses.asdict(base).items()}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise TrainingError(f"--set expects KEY=VALUE, got {item!r}.")
        try:
            raw[key.strip()] = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            raw[key.strip()] = value.strip()
    if max_steps is not None:
        raw["max_steps"] = max_steps
    if epochs is not None:
        raw["epochs"] = epochs
        if max_steps is None:
            raw["max_steps"] = 0
    return parse_config({"finetune": raw}).finetune


def feedback_settings(settings: FinetuneConfig, args: argparse.Namespace) -> FinetuneConfig:
    """A feedback run's defaults: its own step count and learning rate, unless given explicitly."""
    given = {item.partition("=")[0].strip() for item in args.set}
    changes: dict[str, Any] = {}
    if args.max_steps is None and args.epochs is None and "max_steps" not in given:
        changes["max_steps"] = settings.feedback_steps
    if "learning_rate" not in given:
        changes["learning_rate"] = settings.feedback_learning_rate
    return dataclasses.replace(settings, **changes)


def resolve_data(items: Sequence[str], datasets_dir: Path, *, managed_only: bool = False) -> list[Path]:
    """Each item is a managed dataset name (datasets_dir/NAME) or an existing file. With
    `managed_only` (jobs queued from Discord) a dataset archived since is an error, never a
    file of the same name in the working directory."""
    paths = []
    for item in items:
        managed = datasets_dir / item / DATA_FILE
        if is_valid_name(item) and managed.is_file():
            paths.append(managed)
        elif managed_only:
            raise DatasetError(f"The dataset {item!r} is no longer there (archived or deleted since the job was "
                               "queued); see `finetune datasets list`.")
        elif Path(item).is_file():
            paths.append(Path(item))
        else:
            raise DatasetError(f"{item!r} is neither a managed dataset nor a file; see `finetune datasets list`.")
    return paths


def cli_overrides(args: argparse.Namespace) -> list[str]:
    """The command line's changes to [finetune], as `--set` items."""
    items = list(args.set)
    if args.max_steps is not None:
        items.append(f"max_steps={args.max_steps}")
    if args.epochs is not None:
        items.append(f"epochs={args.epochs}")
    return items


def save_run_config(out: Path, config: Config, settings: FinetuneConfig, args: argparse.Namespace) -> Path:
    """Write the config this run really uses (command-line overrides applied) into the run folder."""
    out.mkdir(parents=True, exist_ok=True)
    header = (f"Resolved config of the training run {out.name} (from {config.source or 'defaults'}); "
              f"command-line overrides of [finetune]: {', '.join(cli_overrides(args)) or 'none'}.")
    path = out / RUN_CONFIG
    path.write_text(to_toml(config_mapping(dataclasses.replace(config, finetune=settings)), header=header),
                    encoding="utf-8")
    return path


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def last_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint (trainer_state.json is written last) — a SIGKILL mid-save
    leaves an incomplete one, which is skipped."""
    found = []
    for path in folder.glob("checkpoint-*") if folder.is_dir() else []:
        try:
            json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
            found.append((int(path.name.split("-")[1]), path))
        except (OSError, ValueError, IndexError):
            logger.warning("Ignoring incomplete checkpoint %s", path)
    return max(found)[1] if found else None


def load_datasets(paths: list[Path], fmt: str) -> list[Dataset]:
    return [load_file(p, fmt=fmt) for p in paths]


def add_feedback(config: Config, loaded: Any, out: Path, writer: EventWriter | None, paths: list[Path],
                 datasets: list[Dataset]) -> None:
    """`--data @feedback`: export the approved feedback now and add its teaching data (finetune/teach.py)."""
    from finetune.teach import export_for_training, training_datasets

    taught = export_for_training(config, loaded.tokenizer)
    if writer is not None:
        writer.emit(ProgressEvent("start", message=f"training on {len(taught.taught)} corrections "
                                  f"({taught.sft_rows} approved rows, {taught.pairs} preference pairs) from "
                                  f"{taught.users} users"))
    paths += taught.paths
    datasets += training_datasets(loaded, taught, load_datasets(taught.paths, "messages"), config, out)


@dataclasses.dataclass
class RunPlan:
    """What a run trains on and where it writes, settled (and checked) before the model loads,
    so a bad dataset name or a folder holding old checkpoints fails in seconds, not minutes."""

    settings: FinetuneConfig
    out: Path
    method: str
    feedback: bool
    paths: list[Path]
    datasets: list[Dataset]
    resume_from: Path | None
    writer: EventWriter | None


def resume_checkpoint(out: Path, *, resume: bool) -> Path | None:
    """Without --resume a folder that already holds checkpoints is refused: the Trainer would
    otherwise mix a new run's checkpoints with the old run's."""
    ckpt_dir = out / CHECKPOINTS
    if resume:
        return last_checkpoint(ckpt_dir)
    if last_checkpoint(ckpt_dir) is not None:
        raise TrainingError(f"{out} already holds checkpoints; pass --resume to continue, or choose a new --out.")
    return None


def choose_method(requested: str, datasets: list[Dataset], *, feedback: bool) -> str:
    """`auto` means DPO only when every dataset is preference pairs; a feedback run is SFT because
    the teaching data it exports (`training_datasets`) are message rows."""
    if requested != "auto":
        return requested
    return "dpo" if datasets and not feedback and all(d.kind == "preference" for d in datasets) else "sft"


def plan_run(config: Config, args: argparse.Namespace) -> RunPlan:
    settings = finetune_settings(config.finetune, overrides=args.set, max_steps=args.max_steps, epochs=args.epochs)
    out: Path = args.out.resolve()
    # Under `accelerate launch` only rank 0 writes events and the adapter; the launcher sets RANK.
    main_process = os.environ.get("RANK", "0") == "0"
    resume_from = resume_checkpoint(out, resume=args.resume)
    feedback = FEEDBACK in args.data
    if feedback:
        settings = feedback_settings(settings, args)
    paths = resolve_data([d for d in args.data if d != FEEDBACK], config.storage.datasets_dir,
                         managed_only=getattr(args, "managed", False))
    datasets = load_datasets(paths, args.format)
    if main_process:
        save_run_config(out, config, settings, args)
    method = choose_method(args.method, datasets, feedback=feedback)
    writer = EventWriter(out / EVENTS_FILE, echo=None) if main_process else None
    return RunPlan(settings, out, method, feedback, paths, datasets, resume_from, writer)


def load_model(config: Config, settings: FinetuneConfig) -> LoadedModel:
    """The base model on the GPU when there is one (a CPU run still works, slowly)."""
    import torch

    from assistant.llm.loader import load_causal_lm

    return load_causal_lm(config.model.name, config.storage.models_dir, device="cpu" if not
                          torch.cuda.is_available() else "cuda", dtype=PRECISION_DTYPE[settings.precision],
                          threads=settings.threads or config.model.threads)


def train_reporting_errors(trainer: Any, resume_from: Path | None, writer: EventWriter | None) -> Any:
    """A crash becomes an `error` event before it propagates, so whoever follows the events file
    (the bot, `finetune jobs watch`) learns why without reading the log."""
    try:
        return trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except Exception as exc:
        if writer is not None:
            writer.emit(ProgressEvent("error", message=f"{exc.__class__.__name__}: {exc}"))
        raise


def write_rank_evidence(out: Path, trainer: Any) -> None:
    """Evidence that every DDP rank trained (and how far): rank 0's metadata alone cannot show it."""
    rank = trainer.args.process_index
    (out / "ranks").mkdir(exist_ok=True)
    (out / "ranks" / f"rank{rank}.json").write_text(json.dumps(
        {"rank": rank, "world_size": trainer.args.world_size, "steps": trainer.state.global_step}), encoding="utf-8")


def run_metadata(config: Config, args: argparse.Namespace, plan: RunPlan, loaded: LoadedModel, world_size: int,
                 metrics: dict[str, Any]) -> dict[str, Any]:
    """Everything needed to trust or reproduce the adapter later, stored next to it."""
    return {
        "base_model": {**base_model_identity(loaded.source), "config_name": config.model.name},
        "method": plan.method,
        "datasets": [{"path": str(p), "sha256": file_sha256(p), "rows": len(d.rows), "format": d.format}
                     for p, d in zip(plan.paths, plan.datasets)],
        "hyperparameters": dataclasses.asdict(plan.settings),  # the full resolved [finetune] section
        "overrides": cli_overrides(args),
        "config_file": str(plan.out / RUN_CONFIG),
        "system_prompt": config.model.system_prompt,
        "precision": loaded.dtype,
        "world_size": world_size,
        "metrics": metrics,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def publish_adapter(out: Path, trainer: Any, loaded: LoadedModel, writer: EventWriter | None,
                    metadata: dict[str, Any]) -> None:
    """Save the adapter, draw the loss curve, and only then emit `done`, which followers wait for."""
    adapter = out / ADAPTER_DIR
    # Staged, fsynced, renamed: the registry lists an adapter as soon as adapter_config.json
    # exists, so the folder must appear whole or not at all.
    with staging_dir(adapter) as stage:
        trainer.model.save_pretrained(str(stage))
        loaded.tokenizer.save_pretrained(str(stage))
        (stage / METADATA).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    from finetune.plots import loss_curve

    events, _ = read_events(out / EVENTS_FILE)
    png = loss_curve(events, out / "loss.png", title=f"{out.name}: training loss")
    assert writer is not None
    writer.emit(ProgressEvent("done", step=trainer.state.global_step, total_steps=trainer.state.max_steps,
                              loss=metadata["metrics"]["final_loss"], message="finished",
                              data={"adapter": str(adapter), "loss_png": str(png) if png else None,
                                    "metrics": metadata["metrics"]}))
    writer.close()


def run_training(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    """Train and write the run folder; returns the metadata written next to the adapter."""
    import torch

    plan = plan_run(config, args)
    torch.manual_seed(plan.settings.seed)
    loaded = load_model(config, plan.settings)
    if plan.feedback:
        add_feedback(config, loaded, plan.out, plan.writer, plan.paths, plan.datasets)
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(plan.out / "tensorboard")
    from finetune.recipes import build_dpo_trainer, build_sft_trainer

    build = build_dpo_trainer if plan.method == "dpo" else build_sft_trainer
    trainer, callback = build(loaded, plan.datasets, plan.settings, out=plan.out,
                              system_prompt=config.model.system_prompt, writer=plan.writer,
                              progress=not args.no_progress)
    started = time.time()
    result = train_reporting_errors(trainer, plan.resume_from, plan.writer)
    metadata: dict[str, Any] = {}
    write_rank_evidence(plan.out, trainer)
    if trainer.is_world_process_zero():
        metrics = {"train_loss": result.training_loss, "steps": trainer.state.global_step,
                   "seconds": round(time.time() - started, 2),
                   "final_loss": callback.history[-1]["loss"] if callback.history else None}
        metadata = run_metadata(config, args, plan, loaded, trainer.args.world_size, metrics)
        publish_adapter(plan.out, trainer, loaded, plan.writer, metadata)
    trainer.accelerator.wait_for_everyone()
    return metadata


def main(argv: Sequence[str] | None = None) -> int:
    from assistant.app import run_edge

    parser = make_parser()
    parser.add_argument("--config", type=Path, default=None, help="config file (default ./config.toml)")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)

    def train(config: Config) -> int:
        run_training(config, args)
        return 0

    return run_edge(train, config_path=args.config, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["make_parser", "run_training", "main", "last_checkpoint", "resolve_data",
           "finetune_settings", "base_model_identity"]
