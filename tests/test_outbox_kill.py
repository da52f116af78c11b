"""The bot's process is killed (SIGKILL) after a quote request is stored and before it is
delivered; a new process's worker delivers it: exactly one message in the lab's inbox.

The child is a real bot process: the runtime, the engine, the quote form driven to "send",
and the outbox worker (the quote feature's) pointed at a mail server that accepts TCP but
never greets — so the child has claimed the row and is mid-delivery when it dies.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from bot.escalation.store import QuoteStore
from bot.escalation.transport import SMTPTransport
from bot.escalation.worker import OutboxWorker
from bot.runtime import Knowledge
from bot.testing.smtpd import LocalInbox
from tests.test_mail_delivery import FAST, LABS, eventually

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from bot.config import Settings
    from bot.escalation import Escalation
    from bot.runtime import open_runtime
    from tests.support.chat import ChatDriver
    from tests.test_quote_form import fill

    async def main(db, port, with_worker):
        root = Path.cwd()
        settings = Settings(smtp_host="127.0.0.1", smtp_port=int(port), smtp_tls="none",
                            mail_from="bot@example.org", lab_emails=("lab@example.com",))
        quotes = Escalation(settings, deliver=with_worker == "1")
        runtime = await open_runtime(db, root / "content", root / "flows", features=[quotes])
        await runtime.start()
        chat = ChatDriver(runtime.engine, conversation_id="tg:777")
        await fill(chat)
        await chat.press("send")
        print("STORED", (await chat.state()).values["q_ref"], flush=True)
        await asyncio.Event().wait()  # run until killed

    asyncio.run(main(*sys.argv[1:]))
""")


async def _hanging_server() -> tuple[asyncio.base_events.Server, int, list[asyncio.StreamWriter]]:
    """Accepts connections and never says a word: a delivery that never finishes."""
    conns: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(writer)
        await reader.read()  # until the client goes away
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1]), conns


@pytest.mark.parametrize(
    "with_worker", [True, False], ids=["killed-mid-delivery", "killed-before-worker"]
)
async def test_sigkill_after_store_delivers_exactly_once_after_restart(
    tmp_path: Path, knowledge: Knowledge, with_worker: bool
) -> None:
    db = str(tmp_path / "bot.db")
    hang, hang_port, conns = await _hanging_server()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        db,
        str(hang_port),
        "1" if with_worker else "0",
        cwd=str(ROOT),
        env={**os.environ, "PYTHONPATH": str(ROOT), "LOG_LEVEL": "WARNING"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
        assert line.startswith(b"STORED Q-"), line + (
            await proc.stderr.read() if proc.stderr else b""
        )
        ref = line.split()[1].decode()
        qs = await QuoteStore.open(db)
        try:
            if with_worker:  # wait until the child's worker holds the row (mid-delivery)

                async def claimed() -> bool:
                    return (await qs.outbox(ref=ref))[0].status == "sending"

                await eventually(claimed, timeout=30)
            proc.send_signal(signal.SIGKILL)
            assert await asyncio.wait_for(proc.wait(), timeout=30) == -signal.SIGKILL
            row = (await qs.outbox(ref=ref))[0]
            assert row.status == ("sending" if with_worker else "pending")
            # the restarted bot: a new worker on the same database
            box = LocalInbox()
            await box.start()
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
                await box.wait_for(1, timeout=30)

                async def recorded() -> bool:
                    return (await qs.outbox(ref=ref))[0].status == "delivered"

                await eventually(recorded)
                # give a duplicate every chance to show up: another full pass finds nothing to do
                passes = worker.passes
                worker.kick()

                async def another_pass() -> bool:
                    return worker.passes > passes + 1

                await eventually(another_pass)
            finally:
                await worker.stop()
                await box.stop()
            assert len(box.received) == 1
            assert box.received[0].message()["X-Quote-Reference"] == ref
            rec = await qs.quote(ref)
            assert rec is not None and rec.fields.name == "Anna Smith"
        finally:
            await qs.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        hang.close()
        for writer in conns:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass
        await hang.wait_closed()
