"""Timers: waiting alerts (queue.py), pauses that expire, the retention purge, quote
deliveries that changed. Deadlines come from the desk's clock and from stored state (pauses
in ``agent_topics``, waiting items in ``agent_queue``), so they survive a restart.
"""


from __future__ import annotations

import asyncio
import logging
import math

from .. import privacy
from .queue import Queue
from .recorder import Recorder
from .state import DeskState
from .takeover import Takeover
from .topics import Topics
from .wiring import DeskPorts, Part, Signals, wait

log = logging.getLogger(__name__)


class Timers(Part):
    """The timers task (``run``) and the retention purge."""

    def __init__(
        self,
        ports: DeskPorts,
        st: DeskState,
        signals: Signals,
        *,
        topics: Topics,
        queue: Queue,
        recorder: Recorder,
        takeover: Takeover,
    ) -> None:
        super().__init__(ports, st, signals)
        self.topics = topics
        self.queue = queue
        self.recorder = recorder
        self.takeover = takeover

    # -- timers: pause expiry, retention, quote deliveries ----------------------------------------
    async def run(self) -> None:
        next_purge = self.clock.now() + min(600.0, self.options.purge_every)  # not in the start-up rush
        next_quotes = self.clock.now()
        while True:
            try:
                now = self.clock.now()
                if now >= next_purge:
                    next_purge = now + self.options.purge_every
                    await self.purge()
                if self.ports.enabled and now >= next_quotes:
                    next_quotes = now + self.options.quote_poll_every
                    await self.poll_quotes()
                await self.queue.waiting_alerts(now)  # before an expiry at the same moment: alert first
                for t in [t for t in self.st.topics.values() if t.paused_until is not None and t.paused_until <= now]:
                    await self.takeover.resume(t, mode="waiting" if t.conversation_id in self.st.waiting else "expired")
                pauses = [t.paused_until for t in self.st.topics.values() if t.paused_until is not None]
                waits = self.queue.waiting_deadlines()
                deadline = min([next_purge, next_quotes if self.ports.enabled else math.inf, *pauses, *waits])
                self.signals.tick()
                await wait(self.signals.timer_wake, max(0.0, deadline - self.clock.now()), self.clock)
            except asyncio.CancelledError:
                raise
            except Exception:  # the timers' loop boundary: logged, counted, tried again in 5 s
                self.ports.errors += 1
                log.exception("agents' timers failed; continuing")
                await wait(self.signals.timer_wake, 5.0, self.clock)

    async def purge(self, now: float | None = None) -> int:
        """The retention purge (``privacy.purge``): idle conversations erased (their topics
        and posts cleaned up on Telegram), expired words out of active ones' cards."""
        done = await privacy.purge(
            self.store.db,
            self.options.retention_days,
            now=now if now is not None else self.clock.now(),
            lock=self.ports.tx_lock,
            quote_retention_days=self.options.quote_retention_days,
        )
        if self.ports.enabled:
            alive = {t.conversation_id for t in await self.ports.reg.all_topics()}
            for cid in [c for c in self.st.topics if c not in alive]:
                self.topics.drop(cid)
            for cid in done.pruned:  # drawn again without the expired words
                t = self.st.topics.get(cid)
                if t is not None:
                    t.card_html = ""
                    self.topics.mark_card(t)
            self.st.trash_dirty = True
            self.signals.wake.set()
        return done.conversations

    async def poll_quotes(self) -> None:
        if self.ports.quotes is None:
            return
        since = float(await self.ports.reg.meta("quotes_seen_at") or 0.0)
        rows = await self.ports.quotes.quote_changes(since)
        if not rows:
            return
        for cid, status, _ in rows:
            t = self.st.topics.get(cid)
            if t is not None:
                self.topics.mark_card(t)
            if status == "failed" and since:
                await self.recorder.flag(cid, t, "quote_failed")
        await self.ports.reg.set_meta("quotes_seen_at", max(r[2] for r in rows))
        self.signals.wake.set()
