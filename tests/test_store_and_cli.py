"""The store's failure modes and the command line as other tools drive it."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bot.core.engine import Engine
from bot.core.messages import EventKind, Inbound
from bot.store import SQLiteStore, StoreError
from bot.store.schema import MIGRATIONS
from bot.terminal import chat

ROOT = Path(__file__).resolve().parents[1]


def run_bot(*args: str, stdin: str = "", env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "bot", *args], input=stdin, capture_output=True,
                          text=True, cwd=ROOT, env=full_env, timeout=timeout)


async def test_missing_folder_is_created(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "a" / "b" / "bot.db")
    assert (tmp_path / "a" / "b" / "bot.db").exists()
    await store.close()


async def test_schema_is_versioned(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "v.db")
    async with store.db.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    assert row is not None and row[0] == len(MIGRATIONS)
    async with store.db.execute("PRAGMA journal_mode") as cur:
        mode = await cur.fetchone()
    assert mode is not None and mode[0] == "wal"
    await store.close()
    again = await SQLiteStore.open(tmp_path / "v.db")  # re-opening runs nothing twice
    await again.close()


async def test_newer_schema_is_refused_with_path(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    con = sqlite3.connect(db)
    con.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    con.close()
    with pytest.raises(StoreError, match=str(db)):
        await SQLiteStore.open(db)


async def test_not_a_database_names_the_path(tmp_path: Path) -> None:
    db = tmp_path / "junk.db"
    db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="junk.db"):
        await SQLiteStore.open(db)


async def test_locked_database_names_the_path(tmp_path: Path) -> None:
    db = tmp_path / "locked.db"
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("PRAGMA locking_mode = EXCLUSIVE")
    con.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match="locked"):
            await SQLiteStore.open(db, timeout=0.2)
    finally:
        con.execute("ROLLBACK")
        con.close()


def test_cli_chat_on_a_pipe_converses_line_by_line(tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    out = run_bot("chat", "--db", str(db), stdin="my icloud is full and the backup wont run\n5gb\n")
    assert out.returncode == 0, out.stderr
    assert "[1]" in out.stdout  # buttons as numbered options
    # the same user continues the same conversation in a second run
    again = run_bot("chat", "--db", str(db), stdin="200 gb\n")
    assert again.returncode == 0, again.stderr
    con = sqlite3.connect(db)
    values = con.execute("SELECT state_json FROM conversations WHERE id = 'term:local'").fetchone()[0]
    con.close()
    assert json.loads(values)["values"]["needed_gb"] == "200"


def test_cli_chat_pressing_by_number_and_label(tmp_path: Path) -> None:
    out = run_bot("chat", "--db", str(tmp_path / "c.db"), "--user", "u2", stdin="/start\n1\n")
    assert out.returncode == 0, out.stderr
    assert "earlier step" not in out.stdout.lower()


def test_cli_match_prints_json_lines() -> None:
    out = run_bot("match", stdin="icloud storage full\nwhat is the weather\n")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 2
    assert rows[0]["intent"] == "storage_full" and rows[0]["decision"] == "accept"
    assert rows[1]["decision"] == "reject" and rows[1]["intent"] is None
    for row in rows:
        assert set(row) == {"text", "decision", "intent", "score", "candidates"}
        assert len(row["candidates"]) == 3 and 0 <= row["score"] <= 100


def test_cli_intents_lists_every_intent() -> None:
    out = run_bot("intents")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 21 and all(r["examples"] for r in rows)


def test_cli_check_passes_on_the_repo() -> None:
    out = run_bot("check")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok:")


def test_cli_check_names_file_and_key(tmp_path: Path) -> None:
    import shutil

    shutil.copytree(ROOT / "content", tmp_path / "content")
    shutil.copytree(ROOT / "flows", tmp_path / "flows")
    flow = tmp_path / "flows" / "storage_full.yaml"
    flow.write_text(flow.read_text(encoding="utf-8").replace("goto: common.", "goto: nowhere_at_all.", 1),
                    encoding="utf-8")
    out = run_bot("check", env={"CONTENT_DIR": str(tmp_path / "content"), "FLOWS_DIR": str(tmp_path / "flows")})
    assert out.returncode == 2  # content is configuration: the unit does not restart on 2
    assert "storage_full.yaml" in out.stderr and "nowhere_at_all" in out.stderr


def test_cli_bad_content_fails_at_start_naming_file(tmp_path: Path) -> None:
    import shutil

    shutil.copytree(ROOT / "content", tmp_path / "content")
    (tmp_path / "content" / "en" / "broken.yaml").write_text("engine: [unclosed\n", encoding="utf-8")
    out = run_bot("chat", stdin="hi\n", env={"CONTENT_DIR": str(tmp_path / "content")})
    assert out.returncode == 2
    assert "broken.yaml" in out.stderr
    assert "Traceback" not in out.stderr


def test_cli_bad_db_path_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = run_bot("chat", "--db", str(blocker / "sub" / "bot.db"), stdin="hi\n")
    assert out.returncode == 2
    assert "database" in out.stderr and str(blocker) in out.stderr
    assert "Traceback" not in out.stderr


def test_flow_diagrams_are_current() -> None:
    out = run_bot("diagram")
    assert out.returncode == 0, out.stderr
    current = (ROOT / "docs" / "flows.md").read_text(encoding="utf-8")
    assert out.stdout == current, "run `python -m bot diagram > docs/flows.md` after editing flows"


async def test_terminal_turn_that_fails_gets_a_polite_answer_and_state_is_kept(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    await engine.handle(Inbound("term:x", EventKind.COMMAND, text="start", arg="storage_full"))

    def boom(_text: str) -> object:
        raise RuntimeError("matcher exploded")

    monkeypatch.setattr(engine.matcher, "match", boom)
    out = io.StringIO()
    await chat(engine, "term:x", stdin=io.StringIO("my backup is stuck\n5gb\n"), out=out)
    assert "something went wrong" in out.getvalue().lower()
    after = await engine.state_of("term:x")
    assert after is not None and after.values.get("total_gb") == "5"  # the next message still worked
    assert "matcher exploded" in caplog.text
