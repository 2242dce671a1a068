"""The job runner: training jobs in their own OS processes, one per device, state in the store.

Why a separate process per job: a crash or an out-of-memory kill in training must not take the
bot down, and the event loop must never block. The runner starts exactly the command a
terminal user would type (`python -m finetune.train ...`), sends its output to `train.log`,
and follows progress through the run's `events.jsonl` (finetune/events.py) — the only
contract between the two. State lives in the SQLite store, so a runner that restarts finds
every job again: a still-running process is re-attached by pid (checked by its command line,
so a reused pid is never mistaken for ours); one that ended while nobody watched is marked
succeeded or failed from its events. Waiting happens on threads; `watch` is async and only
reads the events file, so the bot's loop never blocks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

import psutil

from assistant.config import Config, config_mapping, to_toml
from assistant.errors import StoreError, TrainingError
from assistant.names import is_valid_name
from assistant.store import Job, Store
from finetune.events import EVENTS_FILE, ProgressEvent, read_events

logger = logging.getLogger(__name__)

CANCEL_GRACE_S = 10.0
POLL_S = 0.5
CANCEL_FILE = "CANCELLED"
JOB_CONFIG = "job-config.toml"  # the config as it was when the job was queued; the training reads this


@dataclass(frozen=True)
class JobSpec:
    """What to train. `name` becomes the run folder (and adapter) name; default: the job id."""

    data: list[str]
    name: str | None = None
    max_steps: int | None = None
    epochs: float | None = None
    method: str = "auto"
    overrides: list[str] = field(default_factory=list)
    resume: bool = False
    out: str | None = None  # an explicit run folder (the terminal's --out); default runs_dir/name
    format: str = "auto"
    managed: bool = False  # every `data` item is a managed dataset name (never a file of that name)
    config: dict[str, Any] | None = None  # the whole config when queued (filled in by `submit`)


def train_command(config: Config, spec: JobSpec, out: Path, python: str = sys.executable) -> list[str]:
    """The exact `python -m finetune.train` command line for a job (also shown to users)."""
    cmd = [python, "-m", "finetune.train", "--data", *spec.data, "--out", str(out), "--no-progress",
           "--method", spec.method]
    if spec.config is not None:
        cmd += ["--config", str(out / JOB_CONFIG)]
    elif config.source is not None:
        cmd += ["--config", str(config.source)]
    if spec.managed:
        cmd.append("--managed")
    if spec.max_steps is not None:
        cmd += ["--max-steps", str(spec.max_steps)]
    if spec.epochs is not None:
        cmd += ["--epochs", str(spec.epochs)]
    if spec.resume:
        cmd.append("--resume")
    if spec.format != "auto":
        cmd += ["--format", spec.format]
    for item in spec.overrides:
        cmd += ["--set", item]
    return cmd


def final_event(out: Path) -> ProgressEvent | None:
    events, _ = read_events(out / EVENTS_FILE)
    finals = [e for e in events if e.final]
    return finals[-1] if finals else None


def _ours(pid: int, out_dir: str) -> psutil.Process | None:
    """The live process `pid` if it is our training command for `out_dir` (not a reused pid)."""
    try:
        proc = psutil.Process(pid)
        cmdline = proc.cmdline()
        if proc.status() != psutil.STATUS_ZOMBIE and "finetune.train" in cmdline and out_dir in cmdline:
            return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass
    return None


class JobRunner:
    """Submit, inspect, cancel and watch training jobs. Safe to call from any thread or the event loop."""

    def __init__(self, config: Config, store: Store, *, device: str | None = None, python: str = sys.executable,
                 env: dict[str, str] | None = None, beside_engine: bool = False) -> None:
        self.config = config
        self.store = store
        self.device = device or self._detect_device()
        self.python = python
        self.env = env
        self.beside_engine = beside_engine  # the bot's own model runs in this machine's cores too
        self._lock = threading.RLock()
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.recover()

    @staticmethod
    def _detect_device() -> str:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def submit(self, spec: JobSpec) -> str:
        """Queue a job; it starts as soon as the device is free. Returns the job id."""
        if not spec.data:
            raise TrainingError("A training job needs at least one dataset; pass a file or a dataset name.")
        job_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        if spec.out:
            out = Path(spec.out).resolve()  # chosen by a terminal user, not typed into Discord
        else:
            name = spec.name or f"job-{job_id}"
            if not is_valid_name(name):
                raise TrainingError(f"Invalid run name {name!r}: use letters, digits, '.', '_' or '-'.")
            out = self.config.storage.runs_dir / name
        if out.exists() and any(out.iterdir()) and not spec.resume:
            raise TrainingError(f"The run folder {out} already exists; choose another, or pass --resume.")
        if spec.config is None:  # editing config.toml after queueing must not change this job
            spec = dataclasses.replace(spec, config=config_mapping(self.config))
        self.store.create_job(job_id, kind="train", spec=asdict(spec), device=self.device, out_dir=str(out))
        logger.info("Queued job %s -> %s", job_id, out)
        self._kick()
        return job_id

    def status(self, job_id: str) -> Job:
        job = self.store.job(job_id)
        if job is None:
            raise TrainingError(f"No job {job_id!r}; see `finetune jobs list`.")
        return job

    def jobs(self) -> list[Job]:
        return self.store.jobs()

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued job at once, or stop a running one (SIGTERM, then SIGKILL after a grace)."""
        with self._lock:
            job = self.status(job_id)
            if self.store.update_job(job_id, state="cancelled", expect=("queued",)):
                return self.status(job_id)
            if job.state != "running":
                return job
            # A file, not memory: whichever runner (or a restarted one) sees the process end knows why.
            (Path(job.out_dir) / CANCEL_FILE).touch()
            proc = self._procs.get(job_id)
        if proc is not None:
            _stop_group(proc.pid, job.out_dir)
        elif job.pid and _ours(job.pid, job.out_dir):
            _stop_group(job.pid, job.out_dir)
            threading.Thread(target=self._await_foreign, args=(job,), daemon=True).start()
        return self.status(job_id)

    async def watch(self, job_id: str, *, poll_s: float = POLL_S) -> AsyncIterator[ProgressEvent]:
        """Yield the job's progress events (from the start) until it reaches a final state."""
        offset = 0
        out = Path(self.status(job_id).out_dir)
        while True:
            job = await asyncio.to_thread(self.status, job_id)
            events, offset = await asyncio.to_thread(read_events, out / EVENTS_FILE, offset)
            for event in events:
                yield event
            if job.state in ("succeeded", "failed", "cancelled"):
                events, offset = await asyncio.to_thread(read_events, out / EVENTS_FILE, offset)
                for event in events:
                    yield event
                yield ProgressEvent("state", message=job.state, data={"error": job.error} if job.error else {})
                return
            await asyncio.sleep(poll_s)

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job ends (for the terminal and tests; the bot uses `watch`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (job := self.status(job_id)).state in ("queued", "running"):
            if deadline is not None and time.monotonic() > deadline:
                raise TrainingError(f"Job {job_id} still {job.state} after {timeout} s.")
            time.sleep(POLL_S)
        return job

    def recover(self) -> None:
        """After a restart: re-attach running jobs whose process lives, settle the others."""
        for job in self.store.jobs(states=("running",), device=self.device):
            if job.pid and _ours(job.pid, job.out_dir):
                logger.info("Re-attached job %s (pid %d)", job.id, job.pid)
                threading.Thread(target=self._await_foreign, args=(job,), daemon=True).start()
            else:
                self._settle(job.id, Path(job.out_dir), returncode=None)
        self._kick()

    def _kick(self) -> None:
        with self._lock:
            while not self.store.jobs(states=("running",), device=self.device):
                queued = self.store.jobs(states=("queued",), device=self.device)
                if not queued:
                    return
                job = queued[0]
                # Claim it first: another runner on the same store (a restart overlapping) must not start it too.
                if not self.store.update_job(job.id, state="running", expect=("queued",)):
                    return
                try:
                    self._start(job)
                    return
                except OSError as exc:  # disk full, permissions: the job fails, the queue moves on
                    reason = f"could not start: {exc.strerror or exc} ({exc.filename or job.out_dir})"
                    logger.warning("Job %s %s", job.id, reason)
                    self.store.update_job(job.id, state="failed", error=reason, expect=("running",))

    def _child_env(self) -> dict[str, str]:
        """The training process's environment: ours without the bot's secrets (it needs neither the
        Discord token nor the OpenAI key, and a crash dump or a log line must not be able to leak them),
        and with OpenMP workers that sleep when idle instead of spinning on a core the bot needs."""
        env = job_environment(self.env)
        for name in {self.config.discord.token_env, self.config.model.openai_api_key_env,
                     "DISCORD_TOKEN", "OPENAI_API_KEY"}:
            env.pop(name, None)
        return env

    def _start(self, job: Job) -> None:
        """Prepare the run folder and start the training process (OSError when either fails)."""
        out = Path(job.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        spec = JobSpec(**job.spec)
        cmd = train_command(self.config, spec, out, self.python) + thread_budget(self.config, self.beside_engine)
        if spec.config is not None:
            _write_synced(out / JOB_CONFIG, to_toml(spec.config, header=f"Config of job {job.id} as it was "
                                                                         "when queued; the training reads this file."))
        _write_synced(out / "job.json", json.dumps({"id": job.id, "spec": job.spec, "command": cmd}, indent=2))
        with (out / "train.log").open("ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=Path(__file__).resolve().parents[1], start_new_session=True,
                                    env=self._child_env())
        _lower_priority(proc.pid)
        self._procs[job.id] = proc
        self.store.update_job(job.id, pid=proc.pid)
        logger.info("Started job %s (pid %d): %s", job.id, proc.pid, " ".join(cmd))
        threading.Thread(target=self._await_child, args=(job.id, proc, out), daemon=True).start()

    def _await_child(self, job_id: str, proc: subprocess.Popen[bytes], out: Path) -> None:
        code = proc.wait()
        with self._lock:
            self._procs.pop(job_id, None)
        self._settle_watched(job_id, out, returncode=code)

    def _await_foreign(self, job: Job) -> None:
        assert job.pid is not None
        while _ours(job.pid, job.out_dir):
            time.sleep(POLL_S)
        self._settle_watched(job.id, Path(job.out_dir), returncode=None)

    def _settle_watched(self, job_id: str, out: Path, *, returncode: int | None) -> None:
        """A watcher thread outlives its runner when the bot stops during a run: with the store
        closed, the job stays "running" on disk and `recover()` settles it at the next start from
        the run folder (its final event), so nothing is lost and nothing need be raised here."""
        try:
            self._settle(job_id, out, returncode=returncode)
        except StoreError as exc:
            logger.info("Job %s ended after its runner closed (%s); the next start records how it ended.",
                        job_id, exc)

    def _settle(self, job_id: str, out: Path, *, returncode: int | None) -> None:
        last = final_event(out)
        with self._lock:
            if (out / CANCEL_FILE).exists():
                self.store.update_job(job_id, state="cancelled", expect=("running",))
            elif last is not None and last.kind == "done" and returncode in (0, None):
                self.store.update_job(job_id, state="succeeded", result=last.data, expect=("running",))
            else:
                reason = last.message if last is not None and last.kind == "error" else _log_tail(out)
                if returncode is None and last is None:
                    reason = "the training process ended while the runner was not watching. " + reason
                elif returncode is not None:
                    reason = f"exit code {returncode}: {reason}"
                self.store.update_job(job_id, state="failed", error=reason.strip()[:2000], expect=("running",))
        logger.info("Job %s finished: %s", job_id, self.status(job_id).state)
        self._kick()


def _write_synced(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def thread_budget(config: Config, beside_engine: bool) -> list[str]:
    """`--set threads=N` for a job: all cores but one when the live engine shares the machine.

    Why: torch/OpenMP threads of two processes on the same cores oversubscribe them (measured on 2
    cores: a step 11 s alone, 59 s beside one other 2-thread process), and the bot's answers stall
    the same way. An explicit `finetune.threads` wins."""
    if config.finetune.threads or not beside_engine or config.model.device == "cuda":
        return []
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return ["--set", f"threads={max(1, cores - 1)}"]


def job_environment(env: dict[str, str] | None) -> dict[str, str]:
    """The job's environment: OpenMP workers that sleep when idle instead of spinning on a shared core."""
    merged = dict(os.environ if env is None else env)
    merged.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return merged


def _lower_priority(pid: int) -> None:
    """Training yields the CPU to the bot's answers (nice 10). Set from the parent right after the
    start (a `preexec_fn` is unsafe in the bot's threaded process); torch starts its worker threads
    seconds later, while loading the model, and they inherit it."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, 10)
    except OSError:
        pass


def _stop_group(pid: int, out_dir: str) -> None:
    """SIGTERM the job's process group; SIGKILL it if still alive after the grace period.
    Each signal goes only to a process that is still our training command for `out_dir`:
    once it ended its pid may belong to someone else."""
    if _ours(pid, out_dir) is None:
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return

    def reaper() -> None:
        deadline = time.monotonic() + CANCEL_GRACE_S
        while time.monotonic() < deadline:
            if _ours(pid, out_dir) is None:
                return
            time.sleep(0.2)
        if _ours(pid, out_dir) is None:
            return
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    threading.Thread(target=reaper, daemon=True).start()


def _log_tail(out: Path, lines: int = 5) -> str:
    try:
        text = (out / "train.log").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return " | ".join(line for line in text.strip().splitlines()[-lines:])
