"""Helpers shared by the benchmarks: naming the machine, running a measurement in a child process,
writing a results file."""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = ""
    try:
        import torch

        if torch.cuda.is_available():
            gpu = f", GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return f"{cpu}, {os.cpu_count()} cores{gpu}, {platform.system()} {platform.machine()}"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_results(name: str, title: str, lines: list[str]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.md"
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    path.write_text(f"# {title}\n\nMachine: {machine()}  \nMeasured: {stamp}\n\n" + "\n".join(lines) + "\n")
    return path


def report(result: dict[str, Any]) -> None:
    """What a child process measured, in the one line `run_child` reads back."""
    print("RESULT " + json.dumps(result))


def run_child(script: str, *args: str, cwd: Path | None = None) -> tuple[dict[str, Any] | None, str]:
    """Run `script` with `args` in a fresh Python (so its peak RSS and loaded libraries are its
    own) and return what it `report`ed, or None and its stderr when it failed."""
    proc = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, cwd=cwd)
    found = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not found:
        return None, proc.stderr
    return json.loads(found[-1][len("RESULT "):]), proc.stderr
