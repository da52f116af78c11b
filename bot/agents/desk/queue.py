"""The escalation queue, waiting alerts and the desk's figures.

* **Queue.** Each escalation of a conversation (asked for a person, quote sent or failed,
  data at risk, not understood twice, still broken after the last step) is an item in
  ``agent_queue``: open -> claimed (an agent's button, or the agent's first reply in the
  topic) -> resolved (a button, or the hand-back). One item per conversation and kind until
  it is resolved. Its line in the Escalations topic carries Claim / Resolve buttons; ``/queue``
  lists the items not resolved, oldest first, with the same buttons. A takeover is an item
  too (claimed by the agent from the start): its claim and resolution times are the handle time.
* **Waiting.** A customer's message during a takeover opens a ``waiting`` item; the agent's
  next reply resolves it (first-response time). Unanswered after ``wait_alert_seconds`` it
  raises "⏰ waiting N min" in the topic and in the Escalations topic. When the pause expires
  over it, the customer is told when a person will reply (business hours) and the item goes
  back to the queue, listed again. Everything is in the table, so a restart keeps the clocks.
* **Figures.** Takeovers (per agent), first-response and handle seconds go to the anonymous
  counters (``Registry.count``) — no conversation id, so erasing a person leaves them.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import replace

from bot.core.ports import Direction, Entry

from ..ports import GatewayError, MessageGone, NotModified
from ..render import (
    MAX_VISIBLE,
    Html,
    display_name,
    flag_label,
    join,
    pack,
)
from ..rows import QueueItem, Topic
from .posts import Posts
from .records import CALLBACK_PREFIX, QUEUE_KINDS, AgentCallback, AgentCommand
from .state import DeskState
from .topics import Topics
from .wiring import DeskPorts, Part, Signals

log = logging.getLogger(__name__)

QUEUE_PREFIX = CALLBACK_PREFIX + "q:"  # ag:q:c:<item> claim, ag:q:r:<item> resolve
MAX_BUTTONS = 8  # items with buttons in one message (two buttons each)


def _age(seconds: float) -> str:
    minutes = max(0, int(seconds // 60))
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h {minutes % 60:02d} min"
    return f"{minutes // 1440} d"


class Queue(Part):
    """The queue's items, the waiting clocks and the figures (the state's ``waiting`` and
    ``queue_views``); it names cases through ``Topics`` and answers through ``Posts``."""

    def __init__(self, ports: DeskPorts, st: DeskState, signals: Signals, topics: Topics, posts: Posts) -> None:
        super().__init__(ports, st, signals)
        self.topics = topics
        self.posts = posts

    # -- items ------------------------------------------------------------------------------------
    async def open(self, cid: str, kind: str) -> None:
        if kind in QUEUE_KINDS:
            await self.ports.reg.open_item(cid, kind, self.clock.now())

    def kind_label(self, kind: str) -> str:
        key = f"agents.desk.kind.{kind}"
        return self.texts.plain(key) if self.texts.has(key) else flag_label(kind, self.texts)

    def item_line(self, item: QueueItem) -> Html:
        t = self.st.topics.get(item.conversation_id)
        who = self.topics.who(t) if t is not None else Html.text(item.conversation_id)
        if item.status == "claimed":
            mark = self.texts("agents.desk.queue_claimed", agent=item.agent or "?")
        elif item.status == "resolved":
            mark = self.texts("agents.desk.queue_resolved", agent=item.agent or "?")
        else:
            mark = self.texts("agents.desk.queue_open")
        return self.texts(
            "agents.desk.queue_line",
            mark=mark,
            kind=self.kind_label(item.kind),
            who=who,
            age=_age(self.clock.now() - item.opened_at),
        )

    def item_buttons(self, items: list[QueueItem]) -> list[tuple[str, str]]:
        buttons: list[tuple[str, str]] = []
        for item in [i for i in items if i.status != "resolved"][:MAX_BUTTONS]:
            t = self.st.topics.get(item.conversation_id)
            ref = str(t.ref) if t is not None else str(item.id)
            if item.status == "open":
                buttons.append((self.texts.plain("agents.desk.btn_claim", ref=ref), f"{QUEUE_PREFIX}c:{item.id}"))
            buttons.append((self.texts.plain("agents.desk.btn_resolve", ref=ref), f"{QUEUE_PREFIX}r:{item.id}"))
        return buttons

    async def listing_items(self, rows: list[tuple[str, str]]) -> list[QueueItem]:
        """The queue items behind Escalations lines ((conversation, event) each)."""
        out: list[QueueItem] = []
        for cid, event in rows:
            for item in await self.ports.reg.unresolved_items(cid):
                if item.kind == event and item not in out:
                    out.append(item)
        return out

    async def cmd_queue(self, c: AgentCommand) -> None:
        items = await self.ports.reg.unresolved_items(limit=200)
        items = [i for i in items if i.conversation_id in self.st.topics or not self.ports.enabled]
        if not items:
            await self.posts.reply(c, self.texts("agents.desk.queue_none"))
            return
        head = self.texts("agents.desk.queue_header", count=str(len(items)))
        lines = [self.item_line(i) for i in items]
        n = pack(lines, MAX_VISIBLE - head.visible - 1)
        html = join([head, *lines[:n]]).html
        shown = items[:n]
        about = list(dict.fromkeys(i.conversation_id for i in shown))  # recorded: /forget removes it
        if c.private or c.chat_id != self.chat_id:
            await self.posts.reply(c, join([head, *lines[:n]]), about=about, kind="queue")
            return
        thread = c.thread_id
        buttons = self.item_buttons(shown)
        made = self.st.work_started or time.monotonic()

        async def send() -> None:
            sent = await self.posts.post(thread, html, buttons, kind="queue", about=about, made=made)
            views = self.st.queue_views
            views[sent.message_id] = [i.id for i in shown]
            for old in sorted(views)[:-50]:  # the buttons of older answers still work, unedited
                del views[old]

        self.st.urgent.append(send)
        self.signals.wake.set()

    async def on_press(self, cb: AgentCallback) -> None:
        assert self.gateway is not None
        gw = self.gateway
        action, _, id_s = cb.data[len(QUEUE_PREFIX) :].partition(":")
        item = await self.ports.reg.item(int(id_s)) if id_s.isdigit() else None
        toast = ""
        if item is None or item.status == "resolved" or item.conversation_id not in self.st.topics:
            toast = self.texts.plain("agents.desk.queue_gone")
        elif action == "c" and item.status == "claimed" and item.agent != cb.user_name:
            toast = self.texts.plain("agents.desk.queue_taken", agent=item.agent or "?")
        else:
            now = self.clock.now()
            status = "claimed" if action == "c" else "resolved"
            if status == "claimed" and item.status == "open":
                await self.count_first_response([item], now)
            await self.ports.reg.set_item_status([item.id], status, cb.user_name, now)
            t = self.st.topics.get(item.conversation_id)
            ref = str(t.ref) if t is not None else str(item.id)
            key = "agents.desk.queue_claimed" if status == "claimed" else "agents.desk.queue_resolved"
            label = self.texts.plain(key, agent=cb.user_name or "?")
            toast = self.texts.plain("agents.desk.queue_done_toast", status=label.rstrip(" ·"), ref=ref)
            if t is not None:
                self.topics.mark_card(t)
        with contextlib.suppress(GatewayError):
            await gw.answer_callback(cb.callback_id, toast)
        await self.refresh_listing(cb.message_id)

    async def refresh_listing(self, message_id: int) -> None:
        """Re-render a message listing items (an Escalations line or a /queue answer)."""
        ids = self.st.queue_views.get(message_id)
        if ids is not None:
            items = [i for i in [await self.ports.reg.item(x) for x in ids] if i is not None]
            head: list[Html] = [
                self.texts("agents.desk.queue_header", count=str(sum(1 for i in items if i.status != "resolved")))
            ]
        else:
            items = await self.ports.reg.items_in_message(message_id)
            head = []
        if not items:
            return
        assert self.gateway is not None
        gw = self.gateway
        html = join([*head, *[self.item_line(i) for i in items]]).html
        buttons = self.item_buttons(items)

        async def edit() -> None:
            with contextlib.suppress(NotModified, MessageGone):
                await gw.edit(message_id, html, buttons)

        self.st.urgent.append(edit)
        self.signals.wake.set()

    # -- takeovers, replies, hand-backs: the items and the figures -------------------------------
    async def count_first_response(self, items: list[QueueItem], now: float) -> None:
        waiting = [i for i in items if i.status == "open" and i.kind != "takeover"]
        if waiting:
            oldest = min(i.opened_at for i in waiting)
            await self.ports.reg.count({"first_response_s": max(0.0, now - oldest), "first_response_n": 1})

    async def takeover_started(self, t: Topic, agent: str) -> None:
        now = self.clock.now()
        await self.ports.reg.open_item(t.conversation_id, "takeover", now, status="claimed", agent=agent)
        await self.ports.reg.count({"takeover": 1, f"takeover:{agent or '?'}": 1})

    async def agent_answered(self, t: Topic, agent: str) -> None:
        """An agent's message reached the customer: open items are claimed by the agent, the
        customer's wait is over (first response counted once per wait)."""
        now = self.clock.now()
        items = await self.ports.reg.unresolved_items(t.conversation_id)
        await self.count_first_response(items, now)
        await self.ports.reg.set_item_status(
            [i.id for i in items if i.status == "open" and i.kind != "waiting"], "claimed", agent, now
        )
        await self.ports.reg.set_item_status([i.id for i in items if i.kind == "waiting"], "resolved", agent, now)
        if self.st.waiting.pop(t.conversation_id, None) is not None or any(i.kind == "waiting" for i in items):
            self.topics.mark_card(t)

    async def takeover_ended(self, t: Topic, agent: str, waiting: bool) -> None:
        """The hand-back (or the pause's expiry): the takeover's handle time is counted; the
        case is resolved — unless a customer's message is still unanswered: then its items
        go back to the queue, open, for the next agent."""
        now = self.clock.now()
        items = await self.ports.reg.unresolved_items(t.conversation_id)
        for i in items:
            if i.kind == "takeover" and i.claimed_at is not None:
                await self.ports.reg.count({"handle_s": max(0.0, now - i.claimed_at), "handle_n": 1})
        self.st.waiting.pop(t.conversation_id, None)
        takeovers = [i.id for i in items if i.kind == "takeover"]
        await self.ports.reg.set_item_status(takeovers, "resolved", agent, now)
        rest = [i.id for i in items if i.kind != "takeover"]
        if waiting:
            await self.ports.reg.set_item_status(rest, "open", "", now)
        else:
            await self.ports.reg.set_item_status(rest, "resolved", agent, now)

    # -- a customer waiting during a takeover -----------------------------------------------------
    async def customer_waiting(self, cid: str) -> None:
        t = self.st.topics.get(cid)
        if t is None or t.paused_until is None or cid in self.st.waiting:
            return
        now = self.clock.now()
        item = await self.ports.reg.open_item(cid, "waiting", now)
        if item is None:  # already waiting (a restart): keep its start
            item = next((i for i in await self.ports.reg.unresolved_items(cid) if i.kind == "waiting"), None)
        if item is not None:
            self.st.waiting[cid] = item
            self.signals.timer_wake.set()

    async def load_waiting(self) -> None:
        """After a restart: unanswered messages of conversations still taken over."""
        for item in await self.ports.reg.unresolved_items(limit=10_000):
            t = self.st.topics.get(item.conversation_id)
            if item.kind == "waiting" and t is not None and t.paused_until is not None:
                self.st.waiting[item.conversation_id] = item

    def waiting_deadlines(self) -> list[float]:
        return [i.opened_at + self.options.wait_alert_seconds for i in self.st.waiting.values() if i.alerted_at is None]

    async def waiting_alerts(self, now: float) -> None:
        for cid, item in list(self.st.waiting.items()):
            if item.alerted_at is not None or now < item.opened_at + self.options.wait_alert_seconds:
                continue
            t = self.st.topics.get(cid)
            if t is None or t.paused_until is None:
                self.st.waiting.pop(cid, None)
                continue
            minutes = str(max(1, round((now - item.opened_at) / 60)))
            text = self.texts.plain(
                "agents.desk.waiting_alert", minutes=minutes, name=display_name(t.user_name, self.texts)
            )
            await self.ports.reg.set_item_alerted(item.id, now)
            self.st.waiting[cid] = replace(item, alerted_at=now)
            await self.escalate_note(t, "waiting", text)

    async def escalate_note(self, t: Topic, event: str, text: str) -> None:
        """A note in the topic that is also listed in the Escalations topic (never suppressed)."""
        cid = t.conversation_id
        await self.store.add_entries(cid, [Entry(Direction.NOTE, text, kind=f"escalation:{event}")])
        t.escalated_until = self.clock.now() + self.options.watch_seconds
        self.st.escalated.add(cid)
        self.topics.mark_card(t)
        self.signals.new_rows(escalation=True)

    def reply_when(self) -> str:
        """When a person will reply, for the customer: now-ish, or the next opening."""
        at = self.options.hours.describe_next(self.clock.now())
        if not at:
            return self.texts.plain("agents.reply_soon")
        return self.texts.plain("agents.reply_at", when=at)
