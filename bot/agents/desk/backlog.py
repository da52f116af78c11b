"""The backlog: fresh transcript rows read from the database (``messages.id`` cursors, so a
restart loses nothing and repeats nothing) into per-conversation queues — at most
``MAX_PENDING`` in memory, the rest waits in the database — and the cursors saved lazily
(the Live feed's, each topic's ``seen_cursor``). Escalations are read ahead of the rest.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from .records import MAX_PENDING
from .state import DeskState
from .topics import Topics
from .wiring import DeskPorts, Part, Signals


class Backlog(Part):
    """Reading new rows, consuming them once posted, saving the cursors (the state's
    ``pending``, ``fetched``, ``more``, ``esc_pending``, ``feed_cursor``, ``seen_dirty``)."""

    def __init__(self, ports: DeskPorts, st: DeskState, signals: Signals, topics: Topics) -> None:
        super().__init__(ports, st, signals)
        self.topics = topics

    async def fetch(self) -> None:
        """Read new transcript rows (oldest first) into the per-conversation queues — at most
        ``MAX_PENDING`` held in memory: a longer backlog stays in the database until needed."""
        self.st.more = False
        while self.st.pending_rows < MAX_PENDING:
            rows = await self.ports.reg.rows_after(self.st.fetched, 200)
            await self.topics.ensure_many(
                [
                    r.conversation_id
                    for r in rows
                    if r.conversation_id not in self.st.topics and self.st.forgotten.get(r.conversation_id, -1) < r.id
                ]
            )
            for r in rows:
                self.st.fetched = r.id
                cid = r.conversation_id
                barrier = self.st.forgotten.get(cid)
                if barrier is not None and r.id <= barrier:
                    continue
                t = self.st.topics.get(cid) or await self.topics.ensure(cid)
                if r.id <= t.seen_cursor:
                    continue
                self.st.pending.setdefault(cid, deque()).append(r)
                self.st.pending_rows += 1
                if r.direction == "note" and r.kind.startswith("escalation:") and r.id > self.st.esc_known:
                    self.st.esc_pending.append(r)
                    self.st.esc_known = r.id
            if len(rows) < 200:
                break
            await asyncio.sleep(0)  # a long backlog is read in slices: users' turns go between
        else:
            self.st.more = True
        await self.advance_feed()

    async def fetch_escalations(self) -> None:
        """Escalations are read ahead of the backlog: they must not wait behind it."""
        for r in await self.ports.reg.escalations_after(self.st.esc_known, 200):
            if self.st.forgotten.get(r.conversation_id, -1) < r.id and r.conversation_id in self.st.topics:
                self.st.esc_pending.append(r)
            self.st.esc_known = max(self.st.esc_known, r.id)

    async def save_seen(self, force: bool = False) -> None:
        """Persist Live-feed progress lazily (every few seconds): after a crash at most those
        seconds of lines are posted to the feed again; topics have their own cursors."""
        now = time.monotonic()
        if self.st.seen_dirty and (force or now - self.st.seen_saved_at > 2.0):
            self.st.seen_saved_at = now
            topics = [self.st.topics[c] for c in self.st.seen_dirty if c in self.st.topics]
            self.st.seen_dirty.clear()
            await self.ports.reg.save_seen(topics)

    async def advance_feed(self) -> None:
        heads = [q[0].id for q in self.st.pending.values() if q]
        feed = (min(heads) - 1) if heads else self.st.fetched
        if feed > self.st.feed_cursor:
            self.st.feed_cursor = feed
            now = time.monotonic()
            if now - self.st.feed_saved_at > 2.0:  # lazily: the topics' own cursors prevent repeats
                self.st.feed_saved_at = now
                await self.ports.reg.set_meta("feed_cursor", feed)

    def has_work(self) -> bool:
        return (
            bool(self.st.esc_pending)
            or any(self.st.pending.values())
            or bool(self.st.card_work or self.st.gap or self.st.open_now or self.st.escalated)
        )

    def surge(self) -> bool:
        """More conversations are waiting than the group's budget serves one topic each."""
        waiting = sum(1 for q in self.st.pending.values() if q)
        return waiting > self.options.digest_threshold

    def age(self, cid: str) -> int:
        q = self.st.pending.get(cid)
        if q:
            return q[0].id
        t = self.st.topics.get(cid)
        return t.topic_cursor if t else 0

    def consume(self, cid: str, upto: int) -> None:
        q = self.st.pending.get(cid)
        while q and q[0].id <= upto:
            q.popleft()
            self.st.pending_rows -= 1
        if q is not None and not q:
            del self.st.pending[cid]
