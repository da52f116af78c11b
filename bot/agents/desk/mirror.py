"""Mirroring, part 1: the recorder (turns in, NOTE lines and topic registrations out) and the
writer (the only task that calls into the group: one call per free slot, urgent work first,
then escalations, watched conversations, fresh lines, cards, backfill), and the topics.
"""


from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sqlite3
import time
from collections import deque

from bot.core.engine import TurnRecord
from bot.core.ports import Direction, Entry
from bot.store.database import StoreError

from ..ports import (
    GatewayError,
    MessageGone,
    RetryLater,
    Sent,
    ThreadNotFound,
)
from ..registry import Line, Topic
from ..render import (
    MAX_CAPTION,
    PREFIX,
    Html,
    fit,
    flag_label,
    join,
    pack,
    render_line,
)
from .records import (
    ESCALATIONS,
    MAX_PENDING,
    NO_CAPTION,
    NOTE_KIND,
    UserMedia,
    unhtml,
)
from .wiring import wait

MEDIA_MATCH_SECONDS = 600.0  # a user's media not matched to a transcript line by then is dropped

log = logging.getLogger(__name__)


class MirrorPart:
    """Methods of ``AgentDesk`` (state in ``self.st``; see ``desk.py``)."""

    # -- the recorder -----------------------------------------------------------------------------
    async def _recorder(self) -> None:
        while True:
            batch = [await self._inbox.get()]
            self.st.busy = True
            # gather what else arrives in the next moment: one pass (and one write) for many
            # turns instead of a wake-up per turn; nothing waits on this but the mirror
            await asyncio.sleep(self.options.record_every)
            while not self._inbox.empty():
                batch.append(self._inbox.get_nowait())
            self.st.busy = True
            try:
                await self._record_batch(batch)
            except Exception:  # the listener's boundary: the next batch must still be recorded
                self.ports.errors += 1
                cids = sorted({r.conversation_id for r in batch})
                log.exception("agents: recording %d turn(s) failed (conversations %s)", len(batch), ", ".join(cids))
            finally:
                self.st.busy = False
            self.signals.new_rows()
            self.signals.tick()

    async def _record_batch(self, batch: list[TurnRecord]) -> None:
        """What the mirror needs from a batch of turns, with as few writes as possible (the
        database is the users' too): new conversations registered together, changed topics
        saved together; escalation events become NOTE lines."""
        records = [
            r for r in batch if "forgotten" not in r.events and self.st.forgotten.get(r.conversation_id) != math.inf
        ]
        if self.ports.enabled:
            symptoms = {r.conversation_id: self.topics.symptom_of(r.state.flow) for r in records}
            await self.topics.ensure_many([r.conversation_id for r in records], symptoms)
        for rec in records:
            topic = self.st.topics.get(rec.conversation_id) if self.ports.enabled else None
            if topic is None:
                continue
            if rec.state.user_name and rec.state.user_name != topic.user_name:
                topic.user_name = rec.state.user_name
            symptom = self.topics.symptom_of(rec.state.flow)
            if symptom and symptom != topic.symptom:
                topic.symptom = symptom  # saved with the topic's next save (no write per turn)
                if topic.thread_id is not None:
                    topic.name_dirty = True
            self.topics.mark_card(topic)
        for rec in records:
            events = list(rec.events)
            # "Talk to a person" is the human_agent flow: flagged even if the flow raises nothing
            if rec.state.flow == "human_agent" and "human_requested" not in events:
                events.append("human_requested")
            # data at risk: the topic alone (a drowned phone, deleted photos...) flags the case;
            # an answer that confirms it (no backup, a broken iPhone) makes it an escalation
            if "data_at_risk" in events and not rec.state.values.get("data_at_risk"):
                events[events.index("data_at_risk")] = "risky_topic"
            for ev in events:
                try:
                    await self._flag(rec.conversation_id, self.st.topics.get(rec.conversation_id), ev)
                except (sqlite3.Error, StoreError):
                    self.ports.errors += 1
                    log.exception("agents: flagging %s for %s failed", ev, rec.conversation_id)
            if "paused_message" in events and self.ports.enabled:  # a customer waits for the agent
                await self.queue.customer_waiting(rec.conversation_id)

    async def _flag(self, cid: str, topic: Topic | None, event: str) -> None:
        if event in ("paused_message", "forgotten", ""):
            return
        now = self.clock.now()
        await self.queue.open(cid, event)  # a new item once the last one was resolved, even if not listed again
        last = self.st.flag_times.get((cid, event))
        if last is not None and now - last < self.options.repeat_seconds:
            return
        self.st.flag_times[(cid, event)] = now
        kind = f"escalation:{event}" if event in ESCALATIONS else f"flag:{event}"
        await self.store.add_entries(cid, [Entry(Direction.NOTE, flag_label(event, self.texts), kind=kind)])
        self.signals.new_rows(escalation=event in ESCALATIONS)
        if topic is not None:
            topic.add_flag(event)
            if event == "quote_sent":
                topic.quote_state = topic.quote_state or "sent"
            elif event == "quote_failed":
                topic.quote_state = "failed"
            if event in ESCALATIONS:
                topic.escalated_until = now + self.options.watch_seconds
                self.st.escalated.add(cid)
            await self.ports.reg.save(topic)
            self.topics.mark_card(topic)

    async def _note(self, cid: str, text: Html | str) -> None:
        plain = text if isinstance(text, str) else unhtml(text)
        await self.store.add_entries(cid, [Entry(Direction.NOTE, plain, kind="note")])
        self.signals.new_rows()

    # -- the writer -------------------------------------------------------------------------------
    async def _writer(self) -> None:
        backoff = 0.0
        resume_at = 0.0
        while True:
            try:
                if self.st.trash_dirty:
                    self.st.trash_dirty = False
                    self.st.trash = deque(await self.ports.reg.trashed())
                    await self.posts.load_clean()
                # answers to agents and privacy deletions may use the reserved slots; everything
                # else (escalations first) is spread evenly over the window
                urgent = bool(self.st.urgent or self.st.trash or self.st.clean)
                waiting = self.st.maybe_new or self.st.more or self.st.esc_hint
                if not urgent and not waiting and not self._normal_work():
                    await self._save_seen(force=True)  # idle: a good moment to persist progress
                    self.signals.tick()
                    await self._idle()
                    continue
                delay = self.ports.limiter.delay(urgent)
                if backoff:
                    delay = max(delay, resume_at - self.ports.limiter.clock.now())
                if delay > 0:
                    self.signals.tick()
                    await wait(self.signals.wake, delay, self.ports.limiter.clock)
                    continue
                if self.st.esc_hint:
                    self.st.esc_hint = False
                    await self._fetch_escalations()
                    continue
                if (self.st.maybe_new or self.st.more) and self.st.pending_rows < MAX_PENDING:
                    # read new transcript rows only when a call can go out: one query per slot,
                    # not one per user turn (the database is the users' too)
                    self.st.maybe_new = False
                    await self._fetch()
                    continue
                try:
                    called = await self._step(urgent)
                    backoff = 0.0
                except RetryLater as exc:
                    log.warning("agents' group: 429, waiting %.0f s", exc.retry_after)
                    self.ports.limiter.block(exc.retry_after)
                    called = True
                except GatewayError as exc:
                    self.ports.errors += 1
                    backoff = min(self.options.max_backoff, backoff * 2 or 1.0)
                    resume_at = self.ports.limiter.clock.now() + backoff
                    log.warning("agents' group: %s; retrying in %.0f s", exc, backoff)
                    called = True
                self.signals.tick()
                if not called:
                    await self._idle()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop the mirror for good
                self.ports.errors += 1
                log.exception("agents' writer failed; continuing")
                await wait(self.signals.wake, 1.0, self.ports.limiter.clock)

    async def _idle(self) -> None:
        self.st.writer_idle = True
        try:
            await wait(self.signals.wake, self.options.look_every, self.ports.limiter.clock)
        finally:
            self.st.writer_idle = False
        if self.options.look_every is not None:  # other processes may have stored lines or deletions
            self.st.maybe_new = self.st.trash_dirty = True

    async def _fetch(self) -> None:
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
        await self._advance_feed()

    async def _fetch_escalations(self) -> None:
        """Escalations are read ahead of the backlog: they must not wait behind it."""
        for r in await self.ports.reg.escalations_after(self.st.esc_known, 200):
            if self.st.forgotten.get(r.conversation_id, -1) < r.id and r.conversation_id in self.st.topics:
                self.st.esc_pending.append(r)
            self.st.esc_known = max(self.st.esc_known, r.id)

    async def _save_seen(self, force: bool = False) -> None:
        """Persist Live-feed progress lazily (every few seconds): after a crash at most those
        seconds of lines are posted to the feed again; topics have their own cursors."""
        now = time.monotonic()
        if self.st.seen_dirty and (force or now - self.st.seen_saved_at > 2.0):
            self.st.seen_saved_at = now
            topics = [self.st.topics[c] for c in self.st.seen_dirty if c in self.st.topics]
            self.st.seen_dirty.clear()
            await self.ports.reg.save_seen(topics)

    async def _advance_feed(self) -> None:
        heads = [q[0].id for q in self.st.pending.values() if q]
        feed = (min(heads) - 1) if heads else self.st.fetched
        if feed > self.st.feed_cursor:
            self.st.feed_cursor = feed
            now = time.monotonic()
            if now - self.st.feed_saved_at > 2.0:  # lazily: the topics' own cursors prevent repeats
                self.st.feed_saved_at = now
                await self.ports.reg.set_meta("feed_cursor", feed)

    def _normal_work(self) -> bool:
        return (
            bool(self.st.esc_pending)
            or any(self.st.pending.values())
            or bool(self.st.card_work or self.st.gap or self.st.open_now or self.st.escalated)
        )

    async def _step(self, urgent: bool) -> bool:
        """Make at most one call into the group; False if nothing needed one."""
        assert self.gateway is not None
        gw = self.gateway
        if self.st.urgent:
            job = self.st.urgent.popleft()
            try:
                await self.ports.call(True, job)
            except (RetryLater, ThreadNotFound):
                self.st.urgent.appendleft(job)
                raise
            except GatewayError as exc:  # an answer that can't be posted is not retried forever
                log.warning("agents: an answer to agents could not be posted: %s", exc)
            return True
        if self.st.trash:
            thread = self.st.trash[0]
            try:
                await self.ports.call(True, lambda: gw.delete_topic(thread))
            except (ThreadNotFound, MessageGone):
                pass
            except GatewayError as exc:
                if not isinstance(exc, RetryLater):
                    log.warning("agents: deleting topic %s failed (%s); not retried", thread, exc)
                else:
                    raise
            self.st.trash.popleft()
            await self.ports.reg.untrash(thread)
            return True
        if self.st.clean:
            return await self.posts.clean_step()
        if self.st.esc_pending:
            return await self._post_escalations()
        fresh = [cid for cid, q in self.st.pending.items() if q]
        candidates = set(fresh) | self.st.gap | self.st.open_now
        topics = self.st.topics
        watched = [c for c in candidates if (t := topics.get(c)) is not None and self.topics.is_watched(t)]
        for cid in sorted(watched, key=self._age):
            if await self._serve_topic(self.st.topics[cid]):
                return True
            self.st.open_now.discard(cid)
        others = [cid for cid in fresh if cid not in watched]
        if others:
            if len(others) <= self.options.digest_threshold:
                for cid in sorted(others, key=lambda c: self.st.pending[c][0].id):
                    if await self._serve_topic(self.st.topics[cid]):
                        return True
            elif await self._post_digest(others):
                return True
        now = self.clock.now()
        for cid in sorted(self.st.escalated, key=self._age):  # escalated: their topics come next
            t = self.st.topics.get(cid)
            if t is None or t.escalated_until <= now:
                self.st.escalated.discard(cid)
                continue
            if await self._serve_topic(t):
                return True
            if t.card_message_id is not None and t.topic_cursor >= t.seen_cursor:
                self.st.escalated.discard(cid)
        if await self.cards.step(self._serve_topic):
            return True
        for cid in sorted(self.st.gap, key=lambda c: self.st.topics[c].topic_cursor if c in self.st.topics else 0):
            t = self.st.topics.get(cid)
            if t is None or t.topic_cursor >= t.seen_cursor:
                self.st.gap.discard(cid)
                continue
            if await self._serve_topic(t):
                return True
        return False

    def _surge(self) -> bool:
        """More conversations are waiting than the group's budget serves one topic each."""
        waiting = sum(1 for q in self.st.pending.values() if q)
        return waiting > self.options.digest_threshold

    def _age(self, cid: str) -> int:
        q = self.st.pending.get(cid)
        if q:
            return q[0].id
        t = self.st.topics.get(cid)
        return t.topic_cursor if t else 0

    # -- topics -----------------------------------------------------------------------------------
    async def _serve_topic(self, t: Topic) -> bool:
        """The next call for one conversation's topic: create it, post its card, then lines."""
        assert self.gateway is not None
        gw = self.gateway
        if t.conversation_id not in self.st.topics:
            return False
        if t.thread_id is None:
            await self.topics.create(t, urgent=False)
            return True
        thread = t.thread_id
        if t.card_message_id is None:
            html = await self.cards.html(t)
            buttons = self.cards.buttons(t)
            try:
                sent = await self.ports.call(False, lambda: gw.send(thread, html, buttons))
            except ThreadNotFound:
                self.topics.lost(t)
                await self.ports.reg.save(t)
                return True
            t.card_message_id = sent.message_id
            t.card_html = html
            t.card_dirty = False
            await self.ports.reg.save(t)
            return True
        batch = await self._topic_batch(t)
        if batch is None:
            return False
        html, last_id, count, media = batch
        cid = t.conversation_id  # recorded: the retention purge deletes lines older than its period
        if media is not None:  # the user's photo, voice...: copied from their chat, captioned
            line, item = media
            caption = None if item.kind in NO_CAPTION else fit(self._media_caption(line), MAX_CAPTION).html
            try:
                await self.ports.call(False, lambda: self._copy_in(thread, item, caption, cid))
            except ThreadNotFound:
                self.topics.lost(t)
                await self.ports.reg.save(t)
                return True
            except MessageGone:  # the user deleted it meanwhile: the line is posted as text
                log.info("agents: %s's %s %s is gone; posting its line", t.conversation_id, item.kind, item.message_id)
                await self._media_done(item)
                return True
            await self._media_done(item)
            count = 1
        elif html:
            try:
                await self.ports.call(False, lambda: self.posts.post(thread, html, kind="topic", about=[cid]))
            except ThreadNotFound:
                self.topics.lost(t)
                await self.ports.reg.save(t)
                return True
        self.ports.posted_lines += count
        t.topic_cursor = max(t.topic_cursor, last_id)
        t.seen_cursor = max(t.seen_cursor, last_id)
        self._consume(t.conversation_id, last_id)
        if t.topic_cursor >= t.seen_cursor:
            self.st.gap.discard(t.conversation_id)
        await self.ports.reg.save(t)
        await self._advance_feed()
        return bool(html) or media is not None

    async def _topic_batch(self, t: Topic) -> tuple[str, int, int, tuple[Line, UserMedia] | None] | None:
        """Lines not yet in this topic (earlier ones first), packed into one message — or, when
        the next line is a user's media waiting to be copied, that copy (lines before it go first)."""
        limit = 400
        rows: list[Line] = []
        if t.topic_cursor < t.seen_cursor:
            rows = await self.ports.reg.conversation_rows(t.conversation_id, t.topic_cursor, t.seen_cursor, limit)
        if len(rows) < limit:
            rows += [r for r in self.st.pending.get(t.conversation_id, ()) if r.id > max(t.topic_cursor, t.seen_cursor)]
        if not rows:
            return None
        items: list[tuple[int, Html]] = []
        upto = rows[-1].id
        for i, r in enumerate(rows):
            if r.direction == "agent" or r.kind == NOTE_KIND:  # the agent's own message is already in the topic
                continue
            item = self._media_for(r)
            if item is not None:
                if not items:
                    return "", r.id, 0, (r, item)
                upto = rows[i - 1].id  # lines before the copy first
                break
            items.append((r.id, fit(render_line(r, self.texts, out_limit=self.options.topic_out_limit))))
        if not items:
            return "", upto, 0, None
        n = pack([h for _, h in items])
        last_id = upto if n == len(items) else items[n - 1][0]
        html = join(h for _, h in items[:n]).html
        return html, last_id, n, None

    async def _copy_in(self, thread: int, item: UserMedia, caption: str | None, cid: str) -> Sent:
        """Copy a user's message into their topic, recorded like the topic's lines (retention)."""
        assert self.gateway is not None
        made = time.monotonic()
        sent = await self.gateway.copy_to_topic(thread, item.chat_id, item.message_id, caption)
        await self.posts.record(sent.message_id, "topic", [cid], None, made, thread_id=thread)
        return sent

    def _media_for(self, r: Line) -> UserMedia | None:
        """The user's media waiting for this ``[photo] caption`` line (oldest of its kind)."""
        if r.direction != "in" or r.kind != "media" or not r.text.startswith("["):
            return None
        q = self.st.media.get(r.conversation_id)
        if not q:
            return None
        kind = r.text[1:].partition("]")[0].split(",")[0]
        while q and q[0].ts < r.ts - MEDIA_MATCH_SECONDS:  # never matched (an update the engine dropped)
            self.st.media_done.add((q[0].chat_id, q[0].message_id))
            q.popleft()
        return next((m for m in q if m.kind == kind and m.ts <= r.ts + 5), None)

    def _media_caption(self, r: Line) -> Html:
        caption = r.text.partition("]")[2].strip()
        return Html.text(f"{PREFIX['in']} {caption}".strip())

    async def _media_done(self, item: UserMedia) -> None:
        q = self.st.media.get(item.conversation_id)
        if q is not None:
            with contextlib.suppress(ValueError):
                q.remove(item)
            if not q:
                del self.st.media[item.conversation_id]
        if len(self.st.media_done) > 5000:  # only needed until the agent task saw the item
            self.st.media_done.clear()
        self.st.media_done.add((item.chat_id, item.message_id))
        await self.ports.reg.drop_media(item.chat_id, item.message_id)

    def _consume(self, cid: str, upto: int) -> None:
        q = self.st.pending.get(cid)
        while q and q[0].id <= upto:
            q.popleft()
            self.st.pending_rows -= 1
        if q is not None and not q:
            del self.st.pending[cid]
