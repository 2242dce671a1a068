"""The SQLite store: migrations, durability across SIGKILL, threads, and the typed API."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from assistant import store as store_module
from assistant.errors import StoreError
from assistant.store import MIGRATIONS, Store


@pytest.fixture()
def db(tmp_path: Path) -> Store:
    store = Store.open(tmp_path / "sub" / "a.sqlite3")
    yield store
    store.close()


def test_fresh_database_is_migrated_to_latest_and_uses_wal(db: Store) -> None:
    assert db.schema_version == len(MIGRATIONS)
    assert {"conversations", "messages", "corrections", "feedback", "reactions", "datasets", "jobs"} <= set(db.iter_tables())
    mode = sqlite3.connect(db.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_reopening_keeps_data_and_version(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite3"
    with Store.open(path) as s:
        s.add_feedback("nice bot", user_id="7")
    with Store.open(path) as s:
        assert s.schema_version == len(MIGRATIONS)
        assert [f.text for f in s.feedback()] == ["nice bot"]


def test_failing_migration_rolls_back_and_a_fixed_one_applies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.sqlite3"
    Store.open(path).close()

    def broken(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE extra (x INTEGER)")
        raise RuntimeError("boom")

    monkeypatch.setattr(store_module, "MIGRATIONS", [*MIGRATIONS, broken])
    with pytest.raises(RuntimeError):
        Store.open(path)
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert raw.execute("SELECT count(*) FROM sqlite_master WHERE name = 'extra'").fetchone()[0] == 0
    raw.close()

    monkeypatch.setattr(store_module, "MIGRATIONS", [*MIGRATIONS, lambda db: db.execute("CREATE TABLE extra (x)")])
    with Store.open(path) as s:
        assert s.schema_version == len(MIGRATIONS) + 1
        assert "extra" in set(s.iter_tables())


def test_database_newer_than_program_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite3"
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(StoreError, match="newer"):
        Store.open(path)


def test_unwritable_location_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError):
        Store.open(tmp_path / "file" / "db.sqlite3")


def test_correction_survives_sigkill_right_after_the_call(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite3"
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from assistant.store import Store\n"
        f"s = Store.open(Path({str(path)!r}))\n"
        "s.add_correction(prompt='name?', original_reply='Bob', correction='Zorblax', user_id='1')\n"
        "s.add_reaction('m1', 'u1', -1)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1], capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    with Store.open(path) as s:
        assert [(c.prompt, c.original_reply, c.correction) for c in s.corrections()] == [("name?", "Bob", "Zorblax")]


def test_writes_from_many_threads_all_land(db: Store) -> None:
    def worker(n: int) -> None:
        for i in range(25):
            db.add_feedback(f"t{n}-{i}")
            db.record_turn(f"chan{n}", prompt=f"q{i}", reply=f"a{i}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(db.feedback()) == 100
    assert len(db.history("chan2", limit=1000)) == 50


def test_turns_reactions_and_labels(db: Store) -> None:
    turn = db.record_turn("c1", prompt="What is 2+2?", reply="5", user_id="u", prompt_external_id="p1")
    db.set_reply_external_id(turn.reply_message_id, "r1")
    found = db.turn_for_reply("r1")
    assert found is not None and (found.prompt, found.reply) == ("What is 2+2?", "5")
    assert db.turn_for_reply("nope") is None
    db.add_reaction("r1", "a", 1)
    db.add_reaction("r1", "b", -1)
    db.add_reaction("r1", "b", 1)  # changes b's mind rather than adding a row
    assert [(x.prompt, x.reply, x.score) for x in db.labelled_replies()] == [("What is 2+2?", "5", 2)]
    db.remove_reaction("r1", "a")
    assert db.labelled_replies()[0].score == 1
    with pytest.raises(StoreError):
        db.add_reaction("r1", "a", 0)
    with pytest.raises(StoreError):
        db.add_correction(prompt="p", original_reply="r", correction="  ")
    with pytest.raises(StoreError):
        db.add_feedback("")
    assert db.history("c1") == [("user", "What is 2+2?"), ("assistant", "5")]


def test_datasets_selection_and_archive(db: Store) -> None:
    for name in ("a", "b"):
        db.upsert_dataset(name=name, sha256="0" * 64, format="messages", rows=3, tokens=30, path=f"/d/{name}")
    db.select_datasets(["a", "b", "missing"])
    assert db.selected_datasets() == ["a", "b"]
    db.archive_dataset("a", "/d/archive/a.tar.gz")
    assert db.selected_datasets() == ["b"]
    assert [d.name for d in db.datasets()] == ["b"]
    assert [d.name for d in db.datasets(include_archived=True)] == ["a", "b"]
    row = db.dataset("a")
    assert row is not None and row.archived_at is not None and row.path.endswith(".tar.gz")


def test_job_lifecycle_and_guarded_transitions(db: Store) -> None:
    job = db.create_job("j1", kind="train", spec={"data": ["x"]}, device="cpu", out_dir="/runs/j1")
    assert job.state == "queued" and job.spec == {"data": ["x"]}
    assert db.update_job("j1", state="running", pid=os.getpid(), expect=("queued",))
    assert not db.update_job("j1", state="running", expect=("queued",))
    assert db.update_job("j1", state="succeeded", result={"loss": 0.5})
    done = db.job("j1")
    assert done is not None and done.state == "succeeded" and done.result == {"loss": 0.5}
    assert done.started_at is not None and done.finished_at is not None
    assert [j.id for j in db.jobs(states=("succeeded",), device="cpu")] == ["j1"]
    with pytest.raises(StoreError):
        db.update_job("j1", state="exploded")
