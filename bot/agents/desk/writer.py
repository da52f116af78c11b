"""The writer: the only task that calls into the group — one call per free slot of its budget
(``GroupLimiter``), in this order: answers to agents, topic deletions and clean-ups
(privacy), the Escalations list, watched conversations (taken over, opened, escalated),
fresh lines (one topic each, or several users at once in the Live feed in a rush), case
cards, backfill. A topic gets its lines packed into one message; a user's photo, voice...
is copied from their chat into the topic in its place.
"""


from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

from bot.store.conversations import MessageRow

from ..ports import (
    GatewayError,
    MessageGone,
    RetryLater,
    Sent,
    ThreadNotFound,
)
from ..render import (
    MAX_CAPTION,
    PREFIX,
    Html,
    fit,
    join,
    pack,
    render_line,
)
from ..rows import Topic
from .backlog import Backlog
from .cards import Cards
from .feed import Feed
from .posts import Posts
from .records import (
    MAX_PENDING,
    NO_CAPTION,
    NOTE_KIND,
    UserMedia,
)
from .state import DeskState
from .topics import Topics
from .wiring import DeskPorts, Part, Signals, wait

MEDIA_MATCH_SECONDS = 600.0  # a user's media not matched to a transcript line by then is dropped

log = logging.getLogger(__name__)


class Writer(Part):
    """The writer task (``run``): what to post next, and a topic's lines and media."""

    def __init__(
        self,
        ports: DeskPorts,
        st: DeskState,
        signals: Signals,
        *,
        topics: Topics,
        posts: Posts,
        backlog: Backlog,
        cards: Cards,
        feed: Feed,
    ) -> None:
        super().__init__(ports, st, signals)
        self.topics = topics
        self.posts = posts
        self.backlog = backlog
        self.cards = cards
        self.feed = feed

    async def run(self) -> None:
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
                if not urgent and not waiting and not self.backlog.has_work():
                    await self.backlog.save_seen(force=True)  # idle: a good moment to persist progress
                    self.signals.tick()
                    await self.idle()
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
                    await self.backlog.fetch_escalations()
                    continue
                if (self.st.maybe_new or self.st.more) and self.st.pending_rows < MAX_PENDING:
                    # read new transcript rows only when a call can go out: one query per slot,
                    # not one per user turn (the database is the users' too)
                    self.st.maybe_new = False
                    await self.backlog.fetch()
                    continue
                try:
                    called = await self.step(urgent)
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
                    await self.idle()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop the mirror for good
                self.ports.errors += 1
                log.exception("agents' writer failed; continuing")
                await wait(self.signals.wake, 1.0, self.ports.limiter.clock)

    async def idle(self) -> None:
        self.st.writer_idle = True
        try:
            await wait(self.signals.wake, self.options.look_every, self.ports.limiter.clock)
        finally:
            self.st.writer_idle = False
        if self.options.look_every is not None:  # other processes may have stored lines or deletions
            self.st.maybe_new = self.st.trash_dirty = True

    async def step(self, urgent: bool) -> bool:
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
            return await self.feed.post_escalations()
        fresh = [cid for cid, q in self.st.pending.items() if q]
        candidates = set(fresh) | self.st.gap | self.st.open_now
        topics = self.st.topics
        watched = [c for c in candidates if (t := topics.get(c)) is not None and self.topics.is_watched(t)]
        for cid in sorted(watched, key=self.backlog.age):
            if await self.serve_topic(self.st.topics[cid]):
                return True
            self.st.open_now.discard(cid)
        others = [cid for cid in fresh if cid not in watched]
        if others:
            if len(others) <= self.options.digest_threshold:
                for cid in sorted(others, key=lambda c: self.st.pending[c][0].id):
                    if await self.serve_topic(self.st.topics[cid]):
                        return True
            elif await self.feed.post_digest(others):
                return True
        now = self.clock.now()
        for cid in sorted(self.st.escalated, key=self.backlog.age):  # escalated: their topics come next
            t = self.st.topics.get(cid)
            if t is None or t.escalated_until <= now:
                self.st.escalated.discard(cid)
                continue
            if await self.serve_topic(t):
                return True
            if t.card_message_id is not None and t.topic_cursor >= t.seen_cursor:
                self.st.escalated.discard(cid)
        if await self.cards.step(self.serve_topic):
            return True
        for cid in sorted(self.st.gap, key=lambda c: self.st.topics[c].topic_cursor if c in self.st.topics else 0):
            t = self.st.topics.get(cid)
            if t is None or t.topic_cursor >= t.seen_cursor:
                self.st.gap.discard(cid)
                continue
            if await self.serve_topic(t):
                return True
        return False

    # -- topics -----------------------------------------------------------------------------------
    async def serve_topic(self, t: Topic) -> bool:
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
        batch = await self.topic_batch(t)
        if batch is None:
            return False
        html, last_id, count, media = batch
        cid = t.conversation_id  # recorded: the retention purge deletes lines older than its period
        if media is not None:  # the user's photo, voice...: copied from their chat, captioned
            line, item = media
            caption = None if item.kind in NO_CAPTION else fit(self.media_caption(line), MAX_CAPTION).html
            try:
                await self.ports.call(False, lambda: self.copy_in(thread, item, caption, cid))
            except ThreadNotFound:
                self.topics.lost(t)
                await self.ports.reg.save(t)
                return True
            except MessageGone:  # the user deleted it meanwhile: the line is posted as text
                log.info("agents: %s's %s %s is gone; posting its line", t.conversation_id, item.kind, item.message_id)
                await self.media_done(item)
                return True
            await self.media_done(item)
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
        self.backlog.consume(t.conversation_id, last_id)
        if t.topic_cursor >= t.seen_cursor:
            self.st.gap.discard(t.conversation_id)
        await self.ports.reg.save(t)
        await self.backlog.advance_feed()
        return bool(html) or media is not None

    async def topic_batch(self, t: Topic) -> tuple[str, int, int, tuple[MessageRow, UserMedia] | None] | None:
        """Lines not yet in this topic (earlier ones first), packed into one message — or, when
        the next line is a user's media waiting to be copied, that copy (lines before it go first)."""
        limit = 400
        rows: list[MessageRow] = []
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
            item = self.media_for(r)
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

    async def copy_in(self, thread: int, item: UserMedia, caption: str | None, cid: str) -> Sent:
        """Copy a user's message into their topic, recorded like the topic's lines (retention)."""
        assert self.gateway is not None
        made = time.monotonic()
        sent = await self.gateway.copy_to_topic(thread, item.chat_id, item.message_id, caption)
        await self.posts.record(sent.message_id, "topic", [cid], None, made, thread_id=thread)
        return sent

    def media_for(self, r: MessageRow) -> UserMedia | None:
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

    def media_caption(self, r: MessageRow) -> Html:
        caption = r.text.partition("]")[2].strip()
        return Html.text(f"{PREFIX['in']} {caption}".strip())

    async def media_done(self, item: UserMedia) -> None:
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
