"""``python tests/support/die_after_mark.py`` = ``python -m bot run`` that kills itself (SIGKILL)
at the first event-loop turn after a message was marked ``sending`` in ``$BOT_DB``.

A kill -9 lands at a random instruction; this one lands at the earliest moment another callback
of the loop (a turn, a timer, aiosqlite's hand-back) could run after the mark's commit. The bot
must have written the request by then, or the message is lost: after the restart a ``sending``
message is not sent again (tests/test_telegram_durable.py).
"""

from __future__ import annotations

import asyncio.base_events
import os
import runpy
import signal
import sqlite3
import sys

DB = os.environ["BOT_DB"]
_run_once = asyncio.base_events.BaseEventLoop._run_once  # type: ignore[attr-defined]
_seen: dict[str, sqlite3.Connection] = {}


def _marked() -> bool:
    """A message marked: a row in the marks' file (``<db>-sending``), or with status ``sending``
    in ``tg_outbox`` (where the bot kept its marks before)."""
    for name, sql in ((f"{DB}-sending", "SELECT 1 FROM sending LIMIT 1"),
                      (DB, "SELECT 1 FROM tg_outbox WHERE status = 'sending' LIMIT 1")):
        try:
            con = _seen.get(name)
            if con is None:
                con = _seen[name] = sqlite3.connect(f"file:{name}?mode=ro", uri=True)
            if con.execute(sql).fetchone() is not None:
                return True
        except sqlite3.Error:  # not made yet
            _seen.pop(name, None)
    return False


def _run_once_or_die(self: asyncio.base_events.BaseEventLoop) -> None:
    if _marked():
        os.kill(os.getpid(), signal.SIGKILL)
    _run_once(self)


asyncio.base_events.BaseEventLoop._run_once = _run_once_or_die  # type: ignore[attr-defined]
sys.argv = ["bot", "run"]
runpy.run_module("bot", run_name="__main__", alter_sys=True)
