"""Learning from agents: labelled messages become examples at once (no restart), the
terminal import/export, `match --db`, and `check` flagging a text taught under two intents."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from bot.core.messages import EventKind, Inbound
from bot.learning import export_yaml, import_jsonl
from bot.runtime import open_runtime
from bot.store import SQLiteStore
from bot.store.learned import LearnedStore

ROOT = Path(__file__).resolve().parents[1]
TAUGHT = "my pics vanished into thin air when i swapped handsets"


async def _say(runtime, cid: str, text: str):  # noqa: ANN001, ANN202
    await runtime.engine.handle(Inbound(cid, EventKind.COMMAND, text="start"))
    await runtime.engine.handle(Inbound(cid, EventKind.TEXT, text=text))
    return await runtime.engine.state_of(cid)


async def test_a_taught_example_takes_effect_in_the_running_bot(tmp_path: Path) -> None:
    db = tmp_path / "bot.db"
    runtime = await open_runtime(str(db), ROOT / "content", ROOT / "flows")
    try:
        before = await _say(runtime, "u:1", TAUGHT)
        assert before.flow != "recover_deleted"
        # another process (python -m bot learn import, an agent's button) writes the database
        other = await SQLiteStore.open(db)
        try:
            assert await LearnedStore(other).add(TAUGHT, "recover_deleted", "agent:42")
            assert not await LearnedStore(other).add(TAUGHT, "recover_deleted", "agent:42")
        finally:
            await other.close()
        await runtime.learning.refresh()
        after = await _say(runtime, "u:2", TAUGHT.upper() + "!!")
        assert after.flow == "recover_deleted"
    finally:
        await runtime.close()


async def test_the_bot_polls_for_new_examples_by_itself(tmp_path: Path) -> None:
    db = tmp_path / "bot.db"
    runtime = await open_runtime(str(db), ROOT / "content", ROOT / "flows")
    try:
        await runtime.learning.stop()
        runtime.learning.poll_s = 0.02
        runtime.learning.start()
        await LearnedStore(runtime.store).add("the fruit logo thing keeps nagging about payment", "none")
        for _ in range(200):  # bounded wait for the poll, not a fixed sleep
            if runtime.knowledge.matcher.learned_class("the fruit logo thing keeps nagging about payment"):
                break
            await asyncio.sleep(0.02)
        r = runtime.knowledge.matcher.match("The fruit logo thing keeps nagging about payment")
        assert r.decision == "reject"
    finally:
        await runtime.close()


async def test_import_refuses_a_bad_file_whole_and_names_lines(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "bot.db")
    try:
        learned = LearnedStore(store)
        path = tmp_path / "labels.jsonl"
        path.write_text("\n".join([
            json.dumps({"text": "icloud wont stop nagging me its full", "intent": "storage_full"}),
            "{not json",
            json.dumps({"text": "x", "intent": "cooking"}),
            json.dumps({"intent": "none"}),
        ]), encoding="utf-8")
        added, known, problems = await import_jsonl(learned, ["storage_full"], path)
        assert (added, known) == (0, 0)
        assert [p.split(": ")[0] for p in problems] == [f"{path}:2", f"{path}:3", f"{path}:4"]
        assert await learned.since(0) == []
        path.write_text(json.dumps({"text": "my apple id password is hunter2 and backup fails",
                                    "intent": "backup_failed"}) + "\n", encoding="utf-8")
        added, _, problems = await import_jsonl(learned, ["backup_failed"], path)
        assert added == 1 and problems == []
        rows = await learned.since(0)
        assert "hunter2" not in rows[0].text, "a password typed in a message never becomes an example"
        assert "backup_failed:" in export_yaml(rows)
    finally:
        await store.close()


def _cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", *args], input=stdin, capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_terminal_import_match_export_and_check(tmp_path: Path) -> None:
    db = str(tmp_path / "bot.db")
    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps({"text": TAUGHT, "intent": "recover_deleted"}) + "\n", encoding="utf-8")
    r = _cli("learn", "import", str(labels), "--db", db)
    assert r.returncode == 0 and "learned 1 new example" in r.stdout, r.stderr
    line = json.loads(_cli("match", "--db", db, stdin=TAUGHT + "\n").stdout)
    assert (line["decision"], line["intent"]) == ("accept", "recover_deleted")
    out = tmp_path / "learned.yaml"
    assert _cli("learn", "export", str(out), "--db", db).returncode == 0
    assert TAUGHT in out.read_text(encoding="utf-8")
    assert _cli("check", "--db", db).returncode == 0
    labels.write_text(json.dumps({"text": TAUGHT.capitalize() + "?", "intent": "restore_failed"}) + "\n",
                      encoding="utf-8")
    assert _cli("learn", "import", str(labels), "--db", db).returncode == 0
    r = _cli("check", "--db", db)
    assert r.returncode == 2
    assert "learned as recover_deleted" in r.stderr and "restore_failed" in r.stderr
