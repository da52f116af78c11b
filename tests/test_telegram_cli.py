"""``python -m bot run`` and ``backup-db``: the token message, SIGTERM, the online backup."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.__main__ import main
from bot.core.ports import State
from bot.core.semantic import default_cache_dir
from bot.store import SQLiteStore
from bot.tg.cli import backup_db
from tests.support.fake_botapi import FakeBotAPI

ROOT = Path(__file__).resolve().parents[1]


def _clear_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "TELEGRAM_BOT_TOKEN",
        "TELEGRAM_BOT_TOKEN_FILE",
        "WEBHOOK_URL",
        "WEBHOOK_SECRET",
        "WEBHOOK_SECRET_FILE",
        "TELEGRAM_BASE_URL",
        "TELEGRAM_BASE_FILE_URL",
    ):
        monkeypatch.delenv(name, raising=False)


def test_run_without_token_explains_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _clear_env(monkeypatch)
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert "TELEGRAM_BOT_TOKEN" in err and "@BotFather" in err and "/newbot" in err
    assert "python -m bot chat" in err


def test_token_file_is_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _clear_env(monkeypatch)
    token_file = tmp_path / "token"
    token_file.write_text("123:abc\n")
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN_FILE", str(token_file))
    assert main(["run", "--webhook"]) == 2  # the token is there; the webhook URL is not
    err = capsys.readouterr().err
    assert "WEBHOOK_URL" in err and "BotFather" not in err


async def test_backup_db_copies_a_live_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "bot.db"
    store = await SQLiteStore.open(db)
    try:
        await store.save_turn(State("tg:1", flow="main_menu", step="start"), [])
        target = tmp_path / "backups" / "copy.db"
        assert await backup_db(str(db), str(target)) == 0  # while the store is open
        assert await backup_db(str(db), str(target)) == 1  # no silent overwrite
        assert await backup_db(str(db), str(target), force=True) == 0
        folder = tmp_path / "backups"
        assert await backup_db(str(db), str(folder)) == 0  # a folder: a dated file inside
    finally:
        await store.close()
    con = sqlite3.connect(target)
    try:
        assert con.execute("SELECT id FROM conversations").fetchall() == [("tg:1",)]
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    finally:
        con.close()
    assert len(list(folder.glob("bot-*.db"))) == 1
    assert await backup_db(str(tmp_path / "missing.db"), str(tmp_path / "x.db")) == 1
    assert "no database" in capsys.readouterr().err


@pytest.fixture
def content_dir(tmp_path: Path) -> Path:
    import yaml

    from bot.core.content import load_content
    from tests.test_telegram_door import DOOR_TEXTS

    content = tmp_path / "content"
    shutil.copytree(ROOT / "content", content)
    existing, _ = load_content(content, "en")
    extra: dict[str, Any] = {}
    for key, text in DOOR_TEXTS.items():
        if not existing.has(key):
            node = extra
            *parents, leaf = key.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = text
    if extra:
        (content / "en" / "zz_telegram_test.yaml").write_text(yaml.safe_dump(extra), encoding="utf-8")
    return content


async def test_sigterm_finishes_in_flight_and_closes_the_database(tmp_path: Path, content_dir: Path) -> None:
    db = tmp_path / "var" / "bot.db"
    async with FakeBotAPI() as fake:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp_path),
            "BOT_CACHE_DIR": str(default_cache_dir()),  # the library's sentence vectors, computed once per run
            "NO_PROXY": "127.0.0.1,localhost",
            "TELEGRAM_BOT_TOKEN": fake.token,
            "TELEGRAM_BASE_URL": fake.base_url,
            "BOT_DB": str(db),
            "CONTENT_DIR": str(content_dir),
            "FLOWS_DIR": str(ROOT / "flows"),
            "PYTHONPATH": str(ROOT),
            "LOG_LEVEL": "INFO",
            "MAILDIR": str(tmp_path / "maildir"),
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "run",
            cwd=str(tmp_path),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await fake.wait_for(lambda: fake.calls_of("getUpdates"), timeout=30, what="polling")
            stall = fake.stall("sendMessage")  # Telegram is slow to accept the first answer
            update = fake.command(4242, "start")
            await asyncio.wait_for(stall.hit.wait(), 10)
            proc.send_signal(signal.SIGTERM)
            late = fake.command(4343, "start")  # arrives around SIGTERM: answered now or kept
            await asyncio.sleep(0)
            stall.release()
            out, err = await asyncio.wait_for(proc.communicate(), 20)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        log = err.decode()
        assert proc.returncode == 0, log
        assert len(fake.sent(4242)) == 1, log
        assert "database closed" in log
        assert fake.token not in log, "the token never reaches the log"
        assert update["update_id"] not in [u["update_id"] for u in fake.updates]
    con = sqlite3.connect(db)
    try:
        stored = con.execute("SELECT status FROM tg_inbox WHERE update_id = ?", (late["update_id"],)).fetchone()
    finally:
        con.close()
    # the late update is not lost: answered, still unconfirmed at Telegram, or stored for the next start
    assert fake.sent(4343) or late in fake.updates or stored == ("new",)
    assert not Path(f"{db}-wal").exists(), "closed cleanly (WAL checkpointed and removed)"
    con = sqlite3.connect(db)
    try:
        assert con.execute("SELECT flow FROM conversations WHERE id = 'tg:4242'").fetchone()
    finally:
        con.close()


def test_env_example_lists_every_setting() -> None:
    import re

    config = (ROOT / "bot" / "config.py").read_text(encoding="utf-8")
    names = set(re.findall(r'env(?:\.get\(|\[)"([A-Z][A-Z0-9_]+)"', config))
    names |= set(re.findall(r'_(?:int|chat_id)\(env, "([A-Z][A-Z0-9_]+)"', config))
    for secret in re.findall(r'_secret\(env, "([A-Z][A-Z0-9_]+)"\)', config):
        names |= {secret, f"{secret}_FILE"}
    example = (ROOT / "deploy" / "bot.env.example").read_text(encoding="utf-8")
    listed = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", example, flags=re.M))
    assert len(names) > 20
    assert names <= listed, f"missing from deploy/bot.env.example: {sorted(names - listed)}"


def test_healthcheck_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.tg import healthcheck

    monkeypatch.delenv("WEBHOOK_URL", raising=False)
    assert healthcheck.main() == 0  # polling mode: nothing to check
    monkeypatch.setenv("WEBHOOK_URL", "https://bot.example.com/telegram")
    monkeypatch.setenv("WEBHOOK_PORT", "1")  # nothing listens there
    assert healthcheck.main() == 1
