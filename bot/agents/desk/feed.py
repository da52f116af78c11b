"""Mirroring, part 2: the Live feed (busy times: several users' fresh lines in one message) and
the Escalations topic.
"""


from __future__ import annotations

import heapq
import logging

from ..ports import (
    ThreadNotFound,
)
from ..render import (
    MAX_VISIBLE,
    Html,
    fit,
    flag_label,
    join,
    render_line,
)
from .backlog import Backlog
from .posts import Posts
from .queue import Queue
from .state import DeskState
from .topics import Topics
from .wiring import DeskPorts, Part, Signals

log = logging.getLogger(__name__)


class Feed(Part):
    """The Live feed and the Escalations topic (the state's ``live_thread``, ``esc_thread``,
    ``esc_pending``, ``esc_cursor``)."""

    def __init__(
        self,
        ports: DeskPorts,
        st: DeskState,
        signals: Signals,
        *,
        topics: Topics,
        posts: Posts,
        queue: Queue,
        backlog: Backlog,
    ) -> None:
        super().__init__(ports, st, signals)
        self.topics = topics
        self.posts = posts
        self.queue = queue
        self.backlog = backlog

    # -- the Live feed (busy times) ---------------------------------------------------------------
    async def post_digest(self, cids: list[str]) -> bool:
        assert self.gateway is not None
        gw = self.gateway
        # oldest first across conversations; lazily, so a long backlog costs no more than a message
        rows = heapq.merge(*(self.st.pending[c] for c in cids if self.st.pending.get(c)), key=lambda r: r.id)
        counted: dict[str, int] = {}
        blocks: dict[str, list[Html]] = {}
        last: dict[str, int] = {}
        merged: dict[str, tuple[Html, int]] = {}  # a run of bot replies: (first line, how many more)
        stopped: set[str] = set()
        used = 0
        for r in rows:
            cid = r.conversation_id
            if cid in stopped:
                continue
            t = self.st.topics.get(cid)
            if t is None:
                continue
            run = merged.get(cid) if r.direction == "out" else None
            if run is not None:  # several bot replies in a row: one line, "(+n)"
                first, more = run
                line = first + Html.text(f" (+{more + 1})")
                cost = line.visible - (blocks[cid][-1].visible)
                if used + cost > MAX_VISIBLE:
                    stopped.add(cid)
                    continue
                used += cost
                blocks[cid][-1] = line
                merged[cid] = (first, more + 1)
                last[cid] = r.id
                counted[cid] = counted.get(cid, 0) + 1
                continue
            line = fit(
                render_line(
                    r,
                    self.texts,
                    out_limit=self.options.digest_out_limit,
                    in_limit=self.options.digest_in_limit,
                ),
                MAX_VISIBLE - 200,
            )
            cost = line.visible + 1
            if cid not in blocks:
                cost += self.topics.who(t).visible + 4
            if used + cost > MAX_VISIBLE and used:
                stopped.add(cid)
                if len(stopped) > 20 or used > MAX_VISIBLE - 60:
                    break
                continue
            if cid not in blocks:
                blocks[cid] = [Html("<b>", 0) + self.topics.who(t) + Html("</b>", 0)]
            blocks[cid].append(line)
            if r.direction == "out":
                merged[cid] = (line, 0)
            else:
                merged.pop(cid, None)
            last[cid] = r.id
            counted[cid] = counted.get(cid, 0) + 1
            used += cost
        if not blocks:
            return False
        thread = self.st.live_thread
        if thread is None:
            name = self.texts.plain("agents.desk.topic_live")
            thread = await self.ports.call(False, lambda: gw.create_topic(name))
            self.st.live_thread = thread
            await self.ports.reg.set_meta("live_thread", thread)
            return True
        html = join((join(lines) for lines in blocks.values()), Html("\n\n", 2)).html
        parts = [(cid, join(lines)) for cid, lines in blocks.items()]  # recorded: /forget edits one out
        try:
            await self.ports.call(False, lambda: self.posts.post(thread, html, kind="feed", parts=parts))
        except ThreadNotFound:
            self.st.live_thread = None
            await self.ports.reg.set_meta("live_thread", None)
            return True
        for cid, upto in last.items():
            t = self.st.topics.get(cid)
            if t is None:
                continue
            self.ports.posted_lines += counted.get(cid, 0)
            t.seen_cursor = max(t.seen_cursor, upto)
            self.backlog.consume(cid, upto)
            if t.topic_cursor < t.seen_cursor:
                self.st.gap.add(cid)
        self.st.seen_dirty.update(c for c in last if c in self.st.topics)
        await self.backlog.save_seen()
        await self.backlog.advance_feed()
        return True

    # -- escalations ------------------------------------------------------------------------------
    async def escalations_thread(self, urgent: bool) -> int:
        assert self.gateway is not None
        gw = self.gateway
        if self.st.esc_thread is None:
            name = self.texts.plain("agents.desk.topic_escalations")
            thread = await self.ports.call(urgent, lambda: gw.create_topic(name))
            self.st.esc_thread = thread
            await self.ports.reg.set_meta("escalations_thread", thread)
        return self.st.esc_thread

    async def send_or_forget_thread(self, thread: int, html: str, which: str) -> None:
        assert self.gateway is not None
        try:
            await self.gateway.send(thread, html)
        except ThreadNotFound:
            if which == "escalations":
                self.st.esc_thread = None
                await self.ports.reg.set_meta("escalations_thread", None)
            raise

    async def post_escalations(self) -> bool:
        assert self.gateway is not None
        if self.st.esc_thread is None:
            await self.escalations_thread(urgent=False)
            return True
        lines: list[Html] = []
        listed: list[tuple[str, str]] = []  # (conversation, event): their queue items get buttons
        taken = 0
        for r in self.st.esc_pending:
            t = self.st.topics.get(r.conversation_id)
            if t is None:  # forgotten meanwhile
                taken += 1
                continue
            if t.thread_id is None and not self.backlog.surge():
                # the list links to the user's topic: create it first (in a rush, when every
                # call counts, the line offers /open_N instead and the topic comes later)
                if lines:
                    break
                await self.topics.create(t, urgent=False)
                return True
            event = r.kind.partition(":")[2]
            label = r.text if event == "waiting" else flag_label(event, self.texts)  # "⏰ waiting 5 min"
            line = self.texts("agents.desk.escalation_line", flag=label, who=self.topics.who(t))
            if sum(x.visible + 1 for x in lines) + line.visible > MAX_VISIBLE:
                break
            lines.append(line)
            listed.append((r.conversation_id, event))
            taken += 1
        done = self.st.esc_pending[:taken]
        if lines:
            thread = self.st.esc_thread
            items = await self.queue.listing_items(listed)
            buttons = self.queue.item_buttons(items)
            try:
                parts = [(cid, line) for (cid, _), line in zip(listed, lines, strict=True)]  # /forget edits a line out
                sent = await self.ports.call(
                    False, lambda: self.posts.post(thread, join(lines).html, buttons, kind="escalations", parts=parts)
                )
            except ThreadNotFound:
                self.st.esc_thread = None
                await self.ports.reg.set_meta("escalations_thread", None)
                return True
            await self.ports.reg.set_item_message([i.id for i in items], sent.message_id)
        self.st.esc_pending = self.st.esc_pending[taken:]
        if done:
            self.st.esc_cursor = max(self.st.esc_cursor, max(r.id for r in done))
            await self.ports.reg.set_meta("esc_cursor", self.st.esc_cursor)
        return bool(lines)
