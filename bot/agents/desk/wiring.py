"""What every part of the desk is built with, besides the state (``DeskState``):

* ``DeskPorts`` — the engine, the store (writes) and the desk's reading side (``reg``,
  ``rstore``, ``db``: the desk's own connection once started), the group's gateway and its
  budget (``call``: one call into the group, counted), the clock, the texts, the quote
  feature's port, and the two counters the desk reports (``errors``, ``posted_lines``);
* ``Signals`` — the wake-ups between the desk's tasks (``wake``: the writer, ``timer_wake``:
  the timers, ``progress``: whoever waits in ``settle``) and ``new_rows`` (rows were stored);
* ``Part`` — the base of each part: the three above, and nothing else; each part gets the
  few other parts it calls in its constructor, by name.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bot.core.engine import Engine
from bot.store import SQLiteStore

from ..limiter import GroupLimiter
from ..ports import Clock, GroupGateway, QuoteStates
from ..registry import Registry
from ..render import Texts
from .records import DeskOptions, T
from .state import DeskState


@dataclass
class DeskPorts:
    engine: Engine
    store: SQLiteStore  # writes: add_entries, set_flags, paused_conversations
    gateway: GroupGateway | None  # None: no agents' group (escalations recorded, purge only)
    chat_id: int | None
    admin_ids: frozenset[int]
    options: DeskOptions
    clock: Clock
    limiter: GroupLimiter
    texts: Texts
    quotes: QuoteStates | None  # the quote feature's port (None: no quote feature)
    tx_lock: asyncio.Lock
    # the reading side: swapped for the desk's own connection while it runs (desk.start)
    reg: Registry
    rstore: SQLiteStore
    db: Any
    errors: int = 0
    posted_lines: int = 0

    @property
    def enabled(self) -> bool:
        """True when an agents' group is configured."""
        return self.gateway is not None

    async def call(self, urgent: bool, fn: Callable[[], Awaitable[T]]) -> T:
        """One call into the group, counted against its budget whatever the outcome."""
        self.limiter.started(urgent)
        try:
            return await fn()
        finally:
            self.limiter.finished()


class Signals:
    """The wake-ups between the desk's tasks."""

    def __init__(self, st: DeskState) -> None:
        self._st = st
        self.wake = asyncio.Event()  # the writer
        self.timer_wake = asyncio.Event()  # the timers
        self.progress = asyncio.Event()  # settle / wait_until

    def tick(self) -> None:
        self.progress.set()

    def new_rows(self, *, escalation: bool = False) -> None:
        """Rows were stored (a turn, a note, a flag): the writer reads them at its next slot.
        It is woken only if idle (or for an escalation, which may use a reserved slot sooner);
        when it waits for a slot it will look anyway — no wake-up per user turn."""
        st = self._st
        st.maybe_new = True
        if escalation:
            st.esc_hint = True
        if st.writer_idle or escalation:
            self.wake.set()


async def wait(event: asyncio.Event, timeout: float | None, clock: Clock) -> None:
    """Until ``event`` is set or ``timeout`` (on ``clock``) has passed; the event is cleared."""
    if event.is_set():
        event.clear()
        return
    waiter = asyncio.ensure_future(event.wait())
    waits: set[asyncio.Future[Any]] = {waiter}
    if timeout is not None:
        waits.add(asyncio.ensure_future(clock.sleep(timeout)))
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
        for w in waits:
            with contextlib.suppress(asyncio.CancelledError):
                await w
    event.clear()


class Part:
    """A part of the desk: the ports, the state, the signals (and short names for the ports
    that never change); the other parts it calls are given to its constructor."""

    def __init__(self, ports: DeskPorts, st: DeskState, signals: Signals) -> None:
        self.ports = ports
        self.st = st
        self.signals = signals
        self.texts = ports.texts
        self.clock = ports.clock
        self.options = ports.options
        self.gateway = ports.gateway
        self.chat_id = ports.chat_id
        self.engine = ports.engine
        self.store = ports.store
