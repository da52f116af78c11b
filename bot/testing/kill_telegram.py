"""Kill -9 run of the real bot: nothing lost, nothing doubled.

``kill_run(...)`` starts the fake Bot API here and ``python -m bot run`` (polling or webhook)
as a child process, lets ``users`` simulated users each type ``messages`` unique messages
(each waits for its answer, or ``answer_timeout`` s, before the next), and kills the bot with
SIGKILL ``kills`` times at random moments while they do, starting it again each time. At the
end the bot is stopped with SIGTERM and two things are counted:

* processed: the user lines in the bot's transcript per chat against what the chat sent
  (more = a turn ran twice, fewer = a message was lost);
* delivered: the ``sendMessage`` calls per chat at the fake server against what the chat
  sent (one message per turn: more = a reply sent twice, fewer = a reply lost).

Used by the test suite (small) and ``python -m bot bench --telegram --kill`` (200 users,
at least 10 kills per mode).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import random
import signal
import socket
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from .fakeapi import FakeBotAPI
from .phrases import ANY_MESSAGE
from .waiting import wait_until

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
SECRET = "kill-test-secret_42"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bot_command(
    fake: FakeBotAPI,
    db: Path,
    workdir: Path,
    *,
    mode: str = "polling",
    content_dir: Path | None = None,
    flows_dir: Path | None = None,
) -> tuple[dict[str, str], list[str]]:
    """The environment and the command line of ``python -m bot run`` against ``fake``."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "NO_PROXY": "127.0.0.1,localhost",
        "TELEGRAM_BOT_TOKEN": fake.token,
        "TELEGRAM_BASE_URL": fake.base_url,
        "BOT_DB": str(db),
        "CONTENT_DIR": str(content_dir or ROOT / "content"),
        "FLOWS_DIR": str(flows_dir or ROOT / "flows"),
        "MAILDIR": str(workdir / "maildir"),
        "PYTHONPATH": str(ROOT),
        "LOG_LEVEL": "WARNING",
    }
    args = [sys.executable, "-m", "bot", "run"]
    if mode == "webhook":
        port = _free_port()
        env.update(
            WEBHOOK_URL=f"http://127.0.0.1:{port}/hook",
            WEBHOOK_LISTEN="127.0.0.1",
            WEBHOOK_PORT=str(port),
            WEBHOOK_SECRET=SECRET,
        )
        args.append("--webhook")
    return env, args


async def kill_run(
    *,
    mode: str = "polling",
    users: int = 200,
    messages: int = 5,
    kills: int = 10,
    seed: int = 1,
    workdir: Path,
    content_dir: Path | None = None,
    flows_dir: Path | None = None,
    answer_timeout: float = 40.0,
) -> dict[str, Any]:
    rng = random.Random(seed)
    db = workdir / f"kill-{mode}.db"
    started = time.perf_counter()
    async with FakeBotAPI(webhook_retry_delay=0.05) as fake:
        env, args = bot_command(fake, db, workdir, mode=mode, content_dir=content_dir, flows_dir=flows_dir)
        answers: collections.Counter[int] = collections.Counter()
        arrived: dict[int, asyncio.Event] = {}

        def on_call(call: Any) -> None:
            if call.method == "sendMessage":
                chat = call.params.get("chat_id")
                answers[chat] += 1
                ev = arrived.get(chat)
                if ev is not None:
                    ev.set()

        fake.on_call.append(on_call)
        up = asyncio.Event()
        marker = {"n": 0}

        def on_up(call: Any) -> None:
            if call.method in ("getUpdates", "setWebhook") and len(fake.calls) > marker["n"]:
                up.set()

        fake.on_call.append(on_up)
        stderr = open(workdir / f"bot-{mode}.log", "ab")  # noqa: SIM115 - closed below

        async def spawn() -> asyncio.subprocess.Process:
            up.clear()
            marker["n"] = len(fake.calls)
            return await asyncio.create_subprocess_exec(*args, cwd=str(workdir), env=env, stdout=stderr, stderr=stderr)

        proc = await spawn()
        sent: collections.Counter[int] = collections.Counter()
        timeouts = 0

        async def user(chat: int) -> None:
            nonlocal timeouts
            arrived[chat] = asyncio.Event()
            for i in range(messages):
                text = f"{rng.choice(ANY_MESSAGE)} (message {i + 1} of user {chat})"
                before = answers[chat]
                arrived[chat].clear()
                fake.send_text(chat, text)
                sent[chat] += 1
                if not await wait_until(lambda: answers[chat] > before, arrived[chat], answer_timeout):  # noqa: B023
                    timeouts += 1

        async def killer() -> int:
            nonlocal proc
            done = 0
            for _ in range(kills):
                await asyncio.wait_for(up.wait(), 60)
                await asyncio.sleep(rng.uniform(0.2, 1.5))  # a random moment mid-load
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
                    done += 1
                proc = await spawn()
            return done

        await asyncio.wait_for(up.wait(), 60)
        chats = [900_000 + i for i in range(users)]
        kill_task = asyncio.create_task(killer())
        await asyncio.gather(*(user(c) for c in chats))
        killed = await kill_task
        await asyncio.wait_for(up.wait(), 60)
        # let everything queued go out, then stop cleanly
        quiet_since = time.monotonic()
        last = len(fake.calls)
        while time.monotonic() - quiet_since < 1.5:
            await asyncio.sleep(0.25)
            if len(fake.calls_of("sendMessage")) != last:
                last, quiet_since = len(fake.calls_of("sendMessage")), time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        stderr.close()
        stop_code = proc.returncode
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT conversation_id, COUNT(*) FROM messages WHERE direction = 'in' GROUP BY conversation_id"
        ).fetchall()
        unsure = con.execute("SELECT COUNT(*) FROM tg_outbox WHERE status = 'unsure'").fetchone()[0]
        integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()
    processed = {int(cid.split(":", 1)[1]): n for cid, n in rows}
    lost_turns = sum(max(0, sent[c] - processed.get(c, 0)) for c in chats)
    twice_turns = sum(max(0, processed.get(c, 0) - sent[c]) for c in chats)
    lost_replies = sum(max(0, sent[c] - answers[c]) for c in chats)
    double_replies = sum(max(0, answers[c] - sent[c]) for c in chats)
    return {
        "mode": mode,
        "users": users,
        "messages": sum(sent.values()),
        "kills": killed,
        "lost_turns": lost_turns,
        "turns_twice": twice_turns,
        "lost_replies": lost_replies,
        "replies_twice": double_replies,
        "unsure": unsure,
        "timeouts": timeouts,
        "integrity": integrity,
        "stop_exit": stop_code,
        "seconds": round(time.perf_counter() - started, 1),
    }
