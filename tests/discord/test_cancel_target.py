"""`cancel` without a job id stops the running job, not the newest queued one."""

from __future__ import annotations

from types import SimpleNamespace

from assistant.discord.cogs.training import Training
from assistant.store import Store


async def test_cancel_without_an_id_targets_the_running_job(isolated_config) -> None:  # type: ignore[no-untyped-def]
    with Store.open(isolated_config.storage.database) as store:
        for job_id in ("older-running", "newer-queued"):
            store.create_job(job_id, kind="train", spec={"data": ["d"]}, device="cpu", out_dir=f"/tmp/{job_id}")
        store.update_job("older-running", state="running")
        cog = Training(None, SimpleNamespace(store=store, config=isolated_config))  # type: ignore[arg-type]
        assert await cog._job_id("", ("queued", "running")) == "older-running"
        store.update_job("older-running", state="cancelled")
        assert await cog._job_id("", ("queued", "running")) == "newer-queued"
        assert await cog._job_id("named", ("queued", "running")) == "named"
