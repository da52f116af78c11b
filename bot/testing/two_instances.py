"""Two bot processes on one PostgreSQL database behind a round-robin proxy, one killed with
SIGKILL mid-load: nothing lost, nothing doubled.

``two_instance_run(dsn=..., workdir=...)`` starts, all on 127.0.0.1: the fake Bot API (with
the agents' forum group and Telegram's 20-per-minute group limit enforced), the lab's SMTP
server, two ``python -m bot run --webhook`` processes with ``DATABASE_URL`` = ``dsn``, and a
small round-robin proxy in front of them (``RoundRobinProxy``: like nginx with
``proxy_next_upstream``, a request that fails on one instance goes to the next). The webhook
URL registered with the fake is the proxy's. ``users`` simulated users each type ``messages``
numbered messages (each waits for its answer before the next); ``quote_users`` of them first
go through the whole quote form and send it. When ``kill_at`` of all answers have arrived,
one instance gets SIGKILL and is not restarted; the other carries on alone.

At the end (survivor stopped with SIGTERM) it counts, from the fake server, the SMTP server
and the database:

* ``lost_turns`` / ``turns_twice``: user lines in the transcript per chat against what it sent;
* ``lost_replies`` / ``replies_twice``: ``sendMessage`` answers per chat against its messages;
* ``out_of_order``: chats whose transcript has their numbered messages in another order;
* ``quotes_sent`` / ``mails`` / ``mailed_refs`` / ``mails_twice``: quote requests confirmed to
  users, mails the lab received, the distinct quote references in their subjects, and
  references mailed more than once;
* ``group_429``: calls into the agents' group refused for exceeding its limit (with
  ``agents_group``: the leader's desk writes to the fake group; the group's limit across a
  hand-over is also tested in-process: ``tests/test_leadership.py``).

Used by ``tests/test_two_instances.py``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import os
import random
import re
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from .fakeapi import FakeBotAPI
from .smtpd import LocalInbox
from .waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
SECRET = "two-instances-secret_7"
GROUP = -1002000000001
PHRASES = (
    "my icloud storage is full and the backup wont run",
    "backup failed again last night, no idea why",
    "the backup is stuck at 20% since yesterday",
    "is icloud down? nothing works",
    "how do I check my backup is really there",
    "which icloud plan should I get, 50gb enough?",
    "hello",
    "thanks a lot",
)
# the quote form, step by step: (what the user does, with what, the answer awaited: a new
# message, or the multi-select step edited in place)
QUOTE_SCRIPT: tuple[tuple[str, str, str], ...] = (
    ("say", "/start quote", "send"),
    ("say", "iPhone 12, fell in the bathtub", "send"),
    ("press", "water", "send"),
    ("press", "yes", "send"),
    ("press", "m_photos", "edit"),
    ("press", "m__done", "send"),
    ("press", "none", "send"),
    ("say", "Ama Mensah", "send"),
    ("say", "ama.mensah{n}@example.com", "send"),
    ("press", "skip", "send"),
    ("press", "skip", "send"),
    ("press", "yes", "send"),
    ("press", "send", "send"),
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RoundRobinProxy:
    """POSTs to the instances in turn; a refused connection, a reset or a 502/503/504 is
    passed to the next one (every instance tried at most once per request)."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.port = _free_port()
        self._next = itertools.cycle(range(len(ports)))
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.passed_on = 0  # requests that failed on one instance and went to another

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15), trust_env=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._session is not None
        body = await request.read()
        keep = ("content-type", "x-telegram-bot-api-secret-token")
        headers = {k: v for k, v in request.headers.items() if k.lower() in keep}
        for attempt in range(len(self.ports)):
            port = self.ports[next(self._next)]
            try:
                async with self._session.request(request.method, f"http://127.0.0.1:{port}{request.path_qs}",
                                                 data=body, headers=headers) as resp:
                    data = await resp.read()
                    if resp.status in (502, 503, 504) and attempt + 1 < len(self.ports):
                        self.passed_on += 1
                        continue
                    return web.Response(status=resp.status, body=data)
            except (aiohttp.ClientError, TimeoutError):
                self.passed_on += 1
                continue
        return web.Response(status=502, text="no instance answered")


async def two_instance_run(
    *,
    dsn: str,
    workdir: Path,
    users: int = 200,
    messages: int = 3,
    quote_users: int = 10,
    kill_at: float = 0.4,
    seed: int = 1,
    answer_timeout: float = 40.0,
    agents_group: bool = False,
) -> dict[str, Any]:
    rng = random.Random(seed)
    started = time.perf_counter()
    inbox = LocalInbox()
    await inbox.start()
    async with FakeBotAPI(webhook_retry_delay=0.05) as fake:
        fake.make_forum(GROUP)
        group_limit = fake.limit_groups(per_minute=20)
        ports = [_free_port(), _free_port()]
        proxy = RoundRobinProxy(ports)
        await proxy.start()
        base_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(workdir),
            "NO_PROXY": "127.0.0.1,localhost",
            "PYTHONPATH": str(ROOT),
            "TELEGRAM_BOT_TOKEN": fake.token,
            "TELEGRAM_BASE_URL": fake.base_url,
            "DATABASE_URL": dsn,
            "CONTENT_DIR": str(ROOT / "content"),
            "FLOWS_DIR": str(ROOT / "flows"),
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(inbox.port),
            "SMTP_TLS": "none",
            "LAB_EMAIL": "lab@example.com",
            "WEBHOOK_URL": f"http://127.0.0.1:{proxy.port}/hook",
            "WEBHOOK_SECRET": SECRET,
            "WEBHOOK_LISTEN": "127.0.0.1",
            "LOG_LEVEL": "WARNING",
        }
        if agents_group:  # the agents' desk writes to the fake group (the leader's only)
            base_env["AGENT_CHAT_ID"] = str(GROUP)
        logs = [open(workdir / f"instance-{i + 1}.log", "ab") for i in range(2)]  # noqa: SIM115 - closed below
        procs: list[asyncio.subprocess.Process] = []
        for i, port in enumerate(ports):
            procs.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "run", "--webhook", cwd=str(workdir),
                env={**base_env, "WEBHOOK_PORT": str(port)}, stdout=logs[i], stderr=logs[i],
            ))
        try:
            await _until_healthy(ports, timeout=90)
            result = await _load(fake, inbox, procs, rng, users=users, messages=messages, quote_users=quote_users,
                                 kill_at=kill_at, answer_timeout=answer_timeout)
            for p in procs:
                if p.returncode is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    await asyncio.wait_for(p.wait(), 20)
                except TimeoutError:
                    p.kill()
                    await p.wait()
        finally:
            for p in procs:
                if p.returncode is None:
                    p.kill()
                    await p.wait()
            for f in logs:
                f.close()
            await proxy.stop()
            await inbox.stop()
        result["group_429"] = group_limit.refused
        result["group_calls"] = sum(1 for c in fake.calls if c.chat_id == GROUP and c.ok)
        result["passed_on"] = proxy.passed_on
        result["exit_codes"] = [p.returncode for p in procs]
    result.update(await _count_in_db(dsn, result.pop("_sent_texts")))
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


async def _until_healthy(ports: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(trust_env=False) as session:
        for port in ports:
            while True:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(f"http://127.0.0.1:{port}/healthz",
                                           timeout=aiohttp.ClientTimeout(total=2)) as resp:
                        if resp.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"instance on port {port} did not become healthy")
                await asyncio.sleep(0.2)


async def _load(fake: FakeBotAPI, inbox: LocalInbox, procs: list[asyncio.subprocess.Process], rng: random.Random, *,
                users: int, messages: int, quote_users: int, kill_at: float, answer_timeout: float) -> dict[str, Any]:
    chats = [910_000 + i for i in range(users)]
    answers: collections.Counter[int] = collections.Counter()  # sendMessage per chat
    edits: collections.Counter[Any] = collections.Counter()  # editMessageText per (chat, message)
    arrived: dict[int, asyncio.Event] = {c: asyncio.Event() for c in chats}
    sent_texts: dict[int, list[str]] = {c: [] for c in chats}
    typed: collections.Counter[int] = collections.Counter()  # numbered messages per chat
    quotes_confirmed: collections.Counter[int] = collections.Counter()
    total_expected = users * messages
    killed = asyncio.Event()
    timeouts = 0
    form_errors: list[str] = []

    last_call: dict[int, Any] = {}

    def on_call(call: Any) -> None:
        chat = call.params.get("chat_id")
        if call.method in ("sendMessage", "editMessageText") and chat in arrived:
            last_call[chat] = call
            if call.method == "editMessageText":
                edits[(chat, call.params.get("message_id"))] += 1
            else:
                answers[chat] += 1
                if "Q-" in str(call.params.get("text", "")):
                    quotes_confirmed[chat] += 1
            arrived[chat].set()
            if not killed.is_set() and sum(answers.values()) >= kill_at * total_expected:
                killed.set()

    fake.on_call.append(on_call)

    async def wait_answer(chat: int, before: int, counter: collections.Counter[Any] | None = None,
                          key: Any = None) -> None:
        nonlocal timeouts
        counter = answers if counter is None else counter
        key = chat if key is None else key
        if not await wait_until(lambda: counter[key] > before, arrived[chat], answer_timeout):
            timeouts += 1
            return
        call = last_call.get(chat)
        if call is not None and not call.status:  # seen arriving: wait until the fake has it
            with contextlib.suppress(TimeoutError):
                await fake.wait_for(lambda: bool(call.status), 10.0, "the answer recorded")

    async def quote(chat: int, n: int) -> None:
        for action, arg, awaited in QUOTE_SCRIPT:
            counter: collections.Counter[Any] = answers
            key: Any = chat
            before = answers[chat]
            if action == "say" and arg.startswith("/"):
                name, _, rest = arg[1:].partition(" ")
                fake.command(chat, name, rest)
            elif action == "say":
                fake.send_text(chat, arg.format(n=n))
            else:
                try:
                    data, message_id = _button(fake, chat, arg)
                except LookupError as exc:  # the form did not show that button: a missing quote
                    form_errors.append(f"user {chat}: {exc}")
                    return
                if awaited == "edit":  # the same message, edited in place (its buttons renewed)
                    counter, key = edits, (chat, message_id)
                before = counter[key]
                fake.press(chat, data=data, message_id=message_id)
                await wait_answer(chat, before, counter, key)
                continue
            await wait_answer(chat, before, counter, key)

    base: dict[int, int] = {}

    async def user(chat: int, n: int) -> None:
        if n < quote_users:
            await quote(chat, n)
        base[chat] = answers[chat]
        for i in range(messages):
            text = f"{rng.choice(PHRASES)} (message {i + 1} of user {chat})"
            sent_texts[chat].append(text)
            before = answers[chat]
            fake.send_text(chat, text)
            typed[chat] += 1
            await wait_answer(chat, before)

    async def killer() -> None:
        await killed.wait()
        victim = rng.randrange(len(procs))
        procs[victim].kill()
        await procs[victim].wait()

    kill_task = asyncio.create_task(killer())
    await asyncio.gather(*(user(c, i) for i, c in enumerate(chats)))
    kill_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await kill_task
    # let what is queued go out
    quiet_since, last = time.monotonic(), len(fake.calls)
    while time.monotonic() - quiet_since < 2.0:
        await asyncio.sleep(0.25)
        if len(fake.calls) != last:
            last, quiet_since = len(fake.calls), time.monotonic()
    refs = [m for r in inbox.received for m in re.findall(r"Q-[A-Z0-9-]+", r.message().get("Subject", ""))]
    mails_per_ref = collections.Counter(refs)
    replies = {c: answers[c] - base.get(c, answers[c]) for c in chats}  # to the numbered messages
    return {
        "users": users,
        "messages": sum(typed.values()),
        "killed": sum(1 for p in procs if p.returncode == -signal.SIGKILL),
        "timeouts": timeouts,
        "quotes_sent": sum(1 for c in chats if quotes_confirmed[c] >= 1),
        "quotes_confirmed_twice": sum(1 for c in chats if quotes_confirmed[c] > 1),
        "mails": len(inbox.received),
        "mails_twice": sum(1 for n in mails_per_ref.values() if n > 1),
        "mailed_refs": len(mails_per_ref),
        "form_errors": form_errors[:5],
        "lost_replies": sum(max(0, typed[c] - replies[c]) for c in chats),
        "replies_twice": sum(max(0, replies[c] - typed[c]) for c in chats),
        "_sent_texts": sent_texts,
    }


def _button(fake: FakeBotAPI, chat: int, local: str) -> tuple[str, int]:
    """The callback data of the newest keyboard's button whose id ends in ``:local``, and that
    message's id."""
    msg = fake.last_keyboard(chat)
    for b in msg.buttons:
        data = str(b.get("callback_data", ""))
        if data.split(":")[-1] == local:
            return data, msg.message_id
    raise LookupError(f"no button {local!r} in {[b.get('callback_data') for b in msg.buttons]}")


async def _count_in_db(dsn: str, sent_texts: dict[int, list[str]]) -> dict[str, Any]:
    import asyncpg  # waits: only this run needs it (the test kit, PostgreSQL only)

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT conversation_id, text FROM messages WHERE direction = 'in' AND text LIKE '%(message % of user %)' "
            "ORDER BY id"
        )
        unsure = await conn.fetchval("SELECT COUNT(*) FROM tg_outbox WHERE status = 'unsure'")
        done_twice = await conn.fetchval(
            "SELECT COUNT(*) FROM (SELECT update_id FROM tg_outbox WHERE update_id IS NOT NULL AND kind = 'send' "
            "GROUP BY update_id, chat_id HAVING COUNT(*) > 1) AS d"
        )
    finally:
        await conn.close()
    seen: dict[int, list[str]] = collections.defaultdict(list)
    for cid, text in rows:
        seen[int(str(cid).split(":", 1)[1])].append(str(text))
    lost = twice = disorder = 0
    for chat, texts in sent_texts.items():
        got = seen.get(chat, [])
        lost += sum(max(0, texts.count(t) - got.count(t)) for t in set(texts))
        twice += sum(max(0, got.count(t) - texts.count(t)) for t in set(got))
        if [t for t in got if t in texts] != [t for t in texts if t in got]:
            disorder += 1
    return {"lost_turns": lost, "turns_twice": twice, "out_of_order": disorder, "unsure": int(unsure),
            "updates_answered_twice": int(done_twice)}
