"""Leadership: which process does the work that must happen once, when several bot processes
share one database.

Some work must run in one process only: polling ``getUpdates`` (Telegram answers two pollers
with 409 and would split the updates between them), the agents' group writer (it owns the
group's 20-messages-a-minute budget), the desk's timers, the retention purge. The process
that does it is the *leader*; every other one is a *follower* and keeps trying to become it.

* ``SoleLeader`` — SQLite: one process owns the file, it always leads.
* ``AdvisoryLeader`` — PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``)
  held on a connection of its own. The lock lives as long as that connection: when the
  leading process dies (a crash, ``kill -9``, its host gone) the server ends its session and
  the lock is free; a follower tries again every ``retry_every`` seconds (default 2), so a new
  leader takes over within a few seconds. The server is asked to notice a silent peer with
  TCP keepalives (about 11 s). The leader checks its own connection every ``check_every``
  seconds: when the check fails it stops leading at once (its gated work is cancelled),
  reconnects and competes again like a follower.

A lock is named (``key``): ``desk`` for the agents' desk, timers and retention (one per
database, whichever bots share it), ``polling:<bot id>`` for one bot's ``getUpdates``.

``lead(leadership, work, name)`` runs ``work()`` whenever this process leads and cancels it
when it stops leading; it returns when ``work`` returns, or when cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)


def connection_errors() -> tuple[type[BaseException], ...]:
    """What a dropped or broken connection raises in asyncpg."""
    import asyncpg  # waits: asyncpg is imported only when PostgreSQL is used

    return (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class Leadership(Protocol):
    key: str

    @property
    def is_leader(self) -> bool: ...
    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def wait_leader(self) -> None: ...
    async def wait_lost(self) -> None: ...


class SoleLeader:
    """One process on one database (SQLite): always the leader."""

    def __init__(self, key: str = "desk") -> None:
        self.key = key

    @property
    def is_leader(self) -> bool:
        return True

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def wait_leader(self) -> None:
        return None

    async def wait_lost(self) -> None:
        await asyncio.Event().wait()  # never


def lock_id(key: str) -> int:
    """A stable signed 64-bit advisory-lock id for a name (the same in every process)."""
    return int.from_bytes(hashlib.sha256(f"backup-bot:{key}".encode()).digest()[:8], "big", signed=True)


class AdvisoryLeader:
    """Leadership by a PostgreSQL session-level advisory lock on a dedicated connection."""

    def __init__(
        self,
        dsn: str,
        key: str = "desk",
        *,
        retry_every: float = 2.0,
        check_every: float = 1.0,
        timeout: float = 5.0,
        connect: Callable[..., Awaitable[Any]] | None = None,
    ) -> None:
        self.dsn = dsn
        self.key = key
        self.lock_id = lock_id(key)
        self.retry_every = retry_every
        self.check_every = check_every
        self.timeout = timeout
        self._connect = connect
        self._conn: Any = None
        self._leader = asyncio.Event()
        self._follower = asyncio.Event()
        self._follower.set()
        self._task: asyncio.Task[None] | None = None
        self.terms = 0  # how many times this process became the leader (tests, logs)

    @property
    def is_leader(self) -> bool:
        return self._leader.is_set()

    async def start(self) -> None:
        """One attempt now (so a lone process leads before its work starts), then keep trying."""
        if self._task is not None:
            return
        await self._attempt()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"leader-{self.key}")

    async def close(self) -> None:
        """Stop competing; a leader gives the lock up (its connection closes)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._demote("closing")
        await self._drop()

    async def wait_leader(self) -> None:
        await self._leader.wait()

    async def wait_lost(self) -> None:
        await self._follower.wait()

    # -- the loop ---------------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.check_every if self.is_leader else self.retry_every)
            if self.is_leader:
                await self._check()
            else:
                await self._attempt()

    async def _attempt(self) -> None:
        if self._connect is None:
            import asyncpg  # waits: asyncpg is imported only when PostgreSQL is used

            self._connect = asyncpg.connect
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await self._connect(
                    self.dsn,
                    timeout=self.timeout,
                    server_settings={  # a silent peer (host gone) is noticed, its lock freed
                        "application_name": f"backup-bot leader {self.key}",
                        "tcp_keepalives_idle": "5",
                        "tcp_keepalives_interval": "2",
                        "tcp_keepalives_count": "3",
                    },
                )
            got = await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", self.lock_id, timeout=self.timeout)
        except connection_errors() as exc:
            log.warning("leadership %s: cannot reach the database (%s); trying again", self.key, type(exc).__name__)
            await self._drop()
            return
        if got:
            self.terms += 1
            self._follower.clear()
            self._leader.set()
            log.info("leadership %s: this process leads", self.key)

    async def _check(self) -> None:
        try:
            await self._conn.fetchval("SELECT 1", timeout=self.timeout)
        except connection_errors() as exc:
            self._demote(f"its database connection failed ({type(exc).__name__})")
            await self._drop()

    def _demote(self, why: str) -> None:
        if self._leader.is_set():
            log.log(logging.INFO if why == "closing" else logging.WARNING,
                    "leadership %s: this process no longer leads: %s", self.key, why)
        self._leader.clear()
        self._follower.set()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), self.timeout)
            except connection_errors():
                conn.terminate()


async def lead(leadership: Leadership, work: Callable[[], Awaitable[None]], name: str) -> None:
    """Run ``work()`` while this process leads; cancel it when it stops leading and start it
    again on the next term. Returns when ``work`` returns; ``work``'s errors propagate."""
    while True:
        await leadership.wait_leader()
        task = asyncio.ensure_future(work())
        lost = asyncio.ensure_future(leadership.wait_lost())
        try:
            await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            lost.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise
        lost.cancel()
        if task.done():
            task.result()
            return
        log.info("%s stops: this process no longer leads", name)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def leadership_for(database_url: str | None, key: str = "desk", **kwargs: Any) -> Leadership:
    """An ``AdvisoryLeader`` for a PostgreSQL URL, else (SQLite) a ``SoleLeader``."""
    if database_url and database_url.startswith(("postgresql://", "postgres://")):
        return AdvisoryLeader(database_url, key, **kwargs)
    return SoleLeader(key)
