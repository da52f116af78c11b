"""The quote outbox benchmark (``python -m bot bench --quotes``).

1 000 quote requests are stored while the lab's SMTP server (a real aiosmtpd on 127.0.0.1)
is down and the worker keeps failing to reach it; then the server comes up. Measured:
seconds from the server coming up until every request is in the inbox, and how many
messages arrived more than once (by Message-ID). Target: <= 60 s, 0 duplicates.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bot.config import Settings
from bot.core.content import Content, load_content
from bot.escalation.ports import QuoteFields
from bot.escalation.store import QuoteStore
from bot.escalation.transport import SMTPTransport
from bot.escalation.worker import OutboxWorker, RetryPolicy
from bot.testing.smtpd import LocalInbox

log = logging.getLogger(__name__)


async def _seed_transcripts(qs: QuoteStore, n: int, lines: int, now: float) -> None:
    rows = []
    for i in range(n):
        for j in range(lines):
            who = "in" if j % 2 == 0 else "out"
            rows.append(
                (
                    f"bench:{i}",
                    now - 600 + j,
                    who,
                    "text",
                    f"message {j} of conversation {i}: my iPhone fell into water <b>help</b>",
                )
            )
    await qs.database.executemany(
        "INSERT INTO messages (conversation_id, ts, direction, kind, text) VALUES (?, ?, ?, ?, ?)",
        rows,
    )


async def _wait(cond: Callable[[], Awaitable[bool]], timeout: float, step: float = 0.02) -> bool:
    """Poll a condition until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await cond():
            return True
        await asyncio.sleep(step)
    return False


async def bench_quotes(
    settings: Settings | None = None,
    n: int = 1000,
    *,
    content: Content | None = None,
    concurrency: int = 8,
    timeout: float = 120.0,
    transcript_lines: int = 20,
) -> dict[str, float]:
    settings = settings or Settings()
    if content is None:
        content, problems = load_content(settings.content_dir, settings.lang)
        if problems:
            log.warning("content has %d problem(s); run python -m bot check", len(problems))
    quiet = [logging.getLogger(name) for name in ("bot.escalation.worker", "bot.store.sqlite")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="bench-quotes-") as tmp:
        qs = await QuoteStore.open(Path(tmp) / "bench.db")
        inbox = LocalInbox()  # not started: the lab's server is down
        worker = OutboxWorker(
            qs,
            SMTPTransport("127.0.0.1", inbox.port, "none", timeout=10),
            content,
            mail_from="backup-bot@bench.test",
            lab_emails=("lab@bench.test",),
            policy=RetryPolicy(),
            concurrency=concurrency,
            batch=250,
            poll=1.0,
        )
        try:
            now = time.time()
            await _seed_transcripts(qs, n, transcript_lines, now)
            worker.start()
            t_queue = time.perf_counter()
            for i in range(n):
                fields = QuoteFields(
                    device=f"iPhone {12 + i % 4} Pro",
                    damage=("software", "port", "water", "logic_board")[i % 4],
                    passcode="yes",
                    passcode_go_on=False,
                    data=("photos", "messages"),
                    backup="none",
                    name=f"Bench User {i}",
                    email=f"user{i}@example.com",
                    phone="+4915112345678",
                    photos=(),
                    consent_at=now,
                )
                await qs.create_quote(f"bench:{i}", fields, draft_id=f"d{i}")
                if i == 0:
                    worker.kick()
            queue_s = time.perf_counter() - t_queue

            async def server_seen_down() -> bool:
                return worker.server_down

            await _wait(server_seen_down, 30)
            t0 = time.perf_counter()
            await inbox.start()  # the server is back

            async def all_delivered() -> bool:
                return (await qs.counts()).get("delivered", 0) >= n

            await inbox.wait_for(1, timeout)
            first = time.perf_counter() - t0  # mostly the worker's server backoff running out
            done = await _wait(all_delivered, timeout)
            drain = time.perf_counter() - t0
            await worker.stop()
            ids = inbox.message_ids()
            delivered = (await qs.counts()).get("delivered", 0)
        finally:
            await worker.stop()
            await inbox.stop()
            await qs.close()
            for lg, level in zip(quiet, levels, strict=True):
                lg.setLevel(level)
    return {
        "quote_drain_s": round(drain, 2) if done else float("inf"),
        "quote_duplicates": len(ids) - len(set(ids)),
        "quote_requests": n,
        "quote_delivered": delivered,
        "quote_received": len(ids),
        "quote_queue_s": round(queue_s, 2),
        "quote_first_delivery_s": round(first, 2),
    }


if __name__ == "__main__":  # pragma: no cover
    import json

    print(json.dumps(asyncio.run(bench_quotes())))
