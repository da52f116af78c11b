"""The outbox's own guarantees: backoff, one sender per row (leases), taking back the rows
of a dead process, the crash window (same Message-ID), the command line and the benchmark."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.escalation.store import QuoteStore, owner_is_dead
from bot.escalation.transport import SMTPTransport
from bot.escalation.worker import OutboxWorker, RetryPolicy
from bot.runtime import Knowledge
from bot.store import SQLiteStore
from bot.testing.bench_quotes import bench_quotes
from bot.testing.smtpd import LocalInbox
from tests.support.postgres import both_stores
from tests.test_mail_delivery import FAST, LABS, eventually, fields

pytestmark = both_stores  # every test on SQLite and on PostgreSQL (tests/support/postgres.py)

ROOT = Path(__file__).resolve().parents[1]


def _target(store: SQLiteStore) -> str:
    """What a second process would open: the SQLite file, or the PostgreSQL URL."""
    return str(getattr(store.database, "url", store.path))


def test_backoff_is_exponential_capped_and_jittered() -> None:
    p = RetryPolicy(base=2, factor=2, cap=60, jitter=0.5, server_base=1, server_cap=30)
    assert [p.delay(n, 0.0) for n in (1, 2, 3, 4, 5, 6, 7)] == [2, 4, 8, 16, 32, 60, 60]
    assert p.delay(3, 1.0) == 4.0  # the most jitter takes off half
    assert all(4.0 <= p.delay(3, r / 10) <= 8.0 for r in range(11))
    assert p.server_delay(1, 0.0) == 1 and p.server_delay(10, 0.0) == 30


async def test_two_workers_never_send_a_row_twice(store: SQLiteStore, knowledge: Knowledge) -> None:
    box = LocalInbox()
    await box.start()
    q1, q2 = await QuoteStore.open(_target(store)), await QuoteStore.open(_target(store))
    try:
        for i in range(40):
            await q1.create_quote(f"tg:{i}", fields(name=f"User {i}"))
        workers = [
            OutboxWorker(
                q,
                SMTPTransport("127.0.0.1", box.port, "none", timeout=5),
                knowledge.content,
                mail_from="bot@example.org",
                lab_emails=LABS,
                policy=FAST,
                batch=5,
                poll=0.05,
            )
            for q in (q1, q2)
        ]
        for w in workers:
            w.start()
        await box.wait_for(40)

        async def all_recorded() -> bool:
            return (await q1.counts()).get("delivered", 0) == 40

        await eventually(all_recorded)
        for w in workers:
            await w.stop()
        ids = box.message_ids()
        assert len(ids) == 40 and len(set(ids)) == 40
        assert sum(w.delivered for w in workers) == 40
    finally:
        await q1.close()
        await q2.close()
        await box.stop()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


async def test_rows_of_a_dead_process_are_taken_back_at_once(
    store: SQLiteStore, knowledge: Knowledge
) -> None:
    qs = await QuoteStore.open(_target(store))
    box = LocalInbox()
    await box.start()
    try:
        ref, _ = await qs.create_quote("tg:1", fields())
        import socket

        dead = f"{socket.gethostname()}:{_dead_pid()}:abcd"
        assert owner_is_dead(dead) and not owner_is_dead(f"{socket.gethostname()}:{os.getpid()}:x")
        assert not owner_is_dead(
            f"other-host:{_dead_pid()}:x"
        )  # another machine: wait for the lease
        rows = await qs.claim(time.time(), dead, lease=3600, limit=10)
        assert rows and rows[0].status == "sending"
        worker = OutboxWorker(
            qs,
            SMTPTransport("127.0.0.1", box.port, "none", timeout=5),
            knowledge.content,
            mail_from="bot@example.org",
            lab_emails=LABS,
            policy=FAST,
            poll=0.05,
        )
        worker.start()
        try:
            await box.wait_for(1)
        finally:
            await worker.stop()
        row = (await qs.outbox(ref=ref))[0]
        assert row.status == "delivered" and row.attempts == 2  # the interrupted attempt counts
    finally:
        await qs.close()
        await box.stop()


async def test_a_crash_after_acceptance_resends_with_the_same_message_id(
    store: SQLiteStore, knowledge: Knowledge
) -> None:
    """The other duplicate window: the server said 250 but we died before the commit."""
    qs = await QuoteStore.open(_target(store))
    box = LocalInbox()
    await box.start()
    try:
        ref, _ = await qs.create_quote("tg:1", fields())
        worker = OutboxWorker(
            qs,
            SMTPTransport("127.0.0.1", box.port, "none", timeout=5),
            knowledge.content,
            mail_from="bot@example.org",
            lab_emails=LABS,
            policy=FAST,
        )
        await worker.run_once()
        # simulate the lost commit: the row is back to "sending" under a dead owner
        import socket

        await qs.database.execute(
            "UPDATE outbox SET status = 'sending', owner = ?, lease_until = ? WHERE ref = ?",
            (f"{socket.gethostname()}:{_dead_pid()}:x", time.time() + 3600, ref),
        )
        await qs.reclaim_dead(time.time())
        await worker.run_once()
        ids = box.message_ids()
        assert len(ids) == 2 and len(set(ids)) == 1
    finally:
        await qs.close()
        await box.stop()


async def test_stop_gives_claimed_rows_back(store: SQLiteStore) -> None:
    qs = await QuoteStore.open(_target(store))
    try:
        ref, _ = await qs.create_quote("tg:1", fields())
        await qs.claim(time.time(), "me", lease=3600, limit=10)
        await qs.release_owner("me", time.time())
        row = (await qs.outbox(ref=ref))[0]
        assert row.status == "pending" and row.owner == ""
    finally:
        await qs.close()


async def _run_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        cwd=str(ROOT),
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_cli_lists_and_retries(
    store: SQLiteStore, knowledge: Knowledge, tmp_path: Path
) -> None:
    qs = await QuoteStore.open(_target(store))
    box = LocalInbox()
    try:
        failed_ref, _ = await qs.create_quote("tg:1", fields())
        pending_ref, _ = await qs.create_quote("tg:2", fields())
        rows = await qs.claim(time.time(), "me", 60, 10, ref=failed_ref)
        await qs.mark_failed(rows[0].id, "me", "554 refused", "permanent", time.time())
        env = {
            "BOT_DB": store.path,
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(box.port),
            "SMTP_TLS": "none",
            "LAB_EMAIL": ",".join(LABS),
            "MAIL_FROM": "bot@example.org",
            "MAILDIR": str(tmp_path / "md"),
        }
        code, out, _ = await _run_cli("outbox", env=env)
        assert code == 0
        assert "1 pending" in out and "1 failed" in out
        assert failed_ref in out and "554 refused" in out and pending_ref in out
        code, out, err = await _run_cli("outbox", "retry", "nonsense", env=env)
        assert code == 2
        await box.start()
        code, out, err = await _run_cli(
            "outbox", "retry", failed_ref.lower().replace("-", " "), env=env
        )
        assert code == 0, out + err
        assert "delivered" in out and "250" in out
        assert (
            len(box.received) == 1
            and box.received[0].message().get("X-Quote-Reference") == failed_ref
        )
        code, out, _ = await _run_cli("outbox", "retry", failed_ref, env=env)
        assert code == 0 and "was delivered" in out and len(box.received) == 1
        code, out, _ = await _run_cli("outbox", env=env)
        assert failed_ref not in out and pending_ref in out
        code, out, _ = await _run_cli("outbox", "--all", env=env)
        assert failed_ref in out and "delivered" in out
    finally:
        await qs.close()
        await box.stop()


@pytest.mark.parametrize("n", [60])
async def test_bench_drains_without_duplicates(knowledge: Knowledge, n: int) -> None:
    result = await bench_quotes(None, n, content=knowledge.content, timeout=60)
    assert result["quote_delivered"] == n and result["quote_received"] == n
    assert result["quote_duplicates"] == 0 and result["quote_drain_s"] < 60
