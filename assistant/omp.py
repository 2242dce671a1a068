"""How the OpenMP threads of the native libraries we load (llama.cpp, whisper.cpp, torch) wait
at the barriers between the steps of a computation.

Why it matters on a small CPU: a decode step or a whisper encode is hundreds of short parallel
steps. Threads that go to sleep at every barrier ("passive") pay a wake-up each time; threads
that spin ("active", and libgomp's default of ~3 ms of spinning) take a core that another
program may need, and when it has one, each step waits a whole scheduler slice (SmolLM2-135M
measured 0.4 tok/s spinning against 20 tok/s sleeping on a busy 2-core machine). "brief" spins
about 10 microseconds (1,000 rounds), then sleeps: measured on an idle 2-core Xeon, Qwen2.5-0.5B
decoded 22-24 tok/s against 15-17 sleeping at once, and whisper tiny.en read a 3 s clip in ~250
ms against ~365; with a core taken by another program "brief" stayed within ~10 % of "passive"
(`bench/results/thread_wait.md`, `docs/llamacpp.md`).

Each OpenMP runtime reads this once, when it loads, so it is set at start-up before any of
those libraries is imported. A policy already in the environment (`OMP_WAIT_POLICY` or
`GOMP_SPINCOUNT`) is the user's choice and wins.
"""

from __future__ import annotations

import os

BRIEF_SPIN_ROUNDS = 1000  # libgomp's own figure for "very short spinning" (its throttled spin count)


def thread_wait_environment(policy: str) -> dict[str, str]:
    """The variables that select `policy` ("brief", "passive" or "active")."""
    if policy == "brief":
        return {"GOMP_SPINCOUNT": str(BRIEF_SPIN_ROUNDS)}
    if policy in ("passive", "active"):
        return {"OMP_WAIT_POLICY": policy.upper()}
    raise ValueError(f"unknown thread wait policy {policy!r}; use \"brief\", \"passive\" or \"active\"")


def apply_thread_wait(policy: str) -> None:
    """Set `policy` for the OpenMP runtimes not loaded yet, unless the environment chose one."""
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return
    os.environ.update(thread_wait_environment(policy))
