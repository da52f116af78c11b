"""The agents' tools: /help, /open_N, /done (and its buttons), /transcript, /stats,
/unmatched, /find, /note, /assign, /release, /forget (erase.py), /queue (queue.py) — who may
use them, where the answer goes. The commands work over a ``ToolContext``.
"""


from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

from .. import labelling, reports
from ..ports import (
    GatewayError,
    MessageGone,
    NotModified,
)
from ..render import (
    MAX_VISIBLE,
    NL,
    Html,
    clip,
    day_time,
    display_name,
    join,
    one_line,
    pack,
    render_line,
)
from ..rows import Topic
from .erase import Erase
from .posts import Posts
from .queue import QUEUE_PREFIX, Queue
from .records import (
    CALLBACK_PREFIX,
    FORGET_CHOICES,
    AgentCallback,
    AgentCommand,
)
from .state import DeskState
from .takeover import Takeover
from .topics import Topics
from .wiring import DeskPorts, Part, Signals

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToolContext:
    """What the agents' commands work over: the ports, the state, and the parts whose work
    a command asks for (a case's topic, an answer, a queue listing, a takeover, an erasure)."""

    ports: DeskPorts
    st: DeskState
    signals: Signals
    topics: Topics
    posts: Posts
    queue: Queue
    takeover: Takeover
    erase: Erase


class Tools(Part):
    """The commands and the buttons agents press (``on_command``, ``on_callback``)."""

    def __init__(self, ctx: ToolContext) -> None:
        super().__init__(ctx.ports, ctx.st, ctx.signals)
        self.topics = ctx.topics
        self.posts = ctx.posts
        self.queue = ctx.queue
        self.takeover = ctx.takeover
        self.erase = ctx.erase

    # -- commands ---------------------------------------------------------------------------------
    async def is_agent(self, user_id: int) -> bool:
        if user_id in self.ports.admin_ids:
            return True
        if self.gateway is None:
            return False
        cached = self.st.members.get(user_id)
        now = time.monotonic()
        if cached is not None and now - cached[1] < self.options.member_cache_seconds:
            return cached[0]
        try:
            ok = await self.gateway.is_member(user_id)
        except GatewayError:
            ok = False
        self.st.members[user_id] = (ok, now)
        return ok

    async def target(self, c: AgentCommand) -> tuple[str, Topic | None] | None:
        if not c.private and c.thread_id is not None and c.thread_id in self.st.by_thread:
            cid = self.st.by_thread[c.thread_id]
            return cid, self.st.topics.get(cid)
        arg = c.arg.strip().lstrip("#")
        if arg.isdigit() and int(arg) in self.st.by_ref:
            cid = self.st.by_ref[int(arg)]
            return cid, self.st.topics.get(cid)
        if ":" in arg and await reports.conversation(self.ports.db, arg) is not None:
            return arg, self.st.topics.get(arg)
        return None

    async def on_command(self, c: AgentCommand) -> None:
        self.st.work_started = time.monotonic()  # what the answer shows is read after this
        try:
            await self.command(c)
        finally:
            self.st.work_started = 0.0

    async def command(self, c: AgentCommand) -> None:
        if c.private and not await self.is_agent(c.user_id):
            log.info("agent command /%s from non-agent %s ignored", c.name, c.user_id)
            return  # nothing back: not even "unknown command"
        if not c.private:
            self.takeover.seen_agent(c.user_id, c.user_name, c.username)
        name = c.name.lower()
        if name.startswith("open_") and name[5:].isdigit():
            await self.cmd_open(c, int(name[5:]))
            return
        handler = {
            "help": self.cmd_help,
            "start": self.cmd_help,
            "done": self.cmd_done,
            "transcript": self.cmd_transcript,
            "stats": self.cmd_stats,
            "unmatched": self.cmd_unmatched,
            "find": self.cmd_find,
            "forget": self.erase.cmd_forget,
            "note": self.cmd_note,
            "assign": self.cmd_assign,
            "release": self.cmd_release,
            "queue": self.queue.cmd_queue,
        }.get(name)
        if handler is not None:
            await handler(c)

    async def on_claim(self, cb: AgentCallback, t: Topic) -> None:
        """🙋 on the card: the presser owns the case (unless someone already does)."""
        assert self.gateway is not None
        if t.owner_id and t.owner_id != cb.user_id:
            with contextlib.suppress(GatewayError):
                await self.gateway.answer_callback(
                    cb.callback_id, self.texts.plain("agents.desk.already_owned", owner=t.owner_name or "?")
                )
            return
        with contextlib.suppress(GatewayError):
            await self.gateway.answer_callback(cb.callback_id)
        self.takeover.seen_agent(cb.user_id, cb.user_name, "")
        if t.owner_id != cb.user_id:
            await self.takeover.set_owner(t, cb.user_id, cb.user_name, "agents.desk.note_claimed", by=cb.user_name)

    async def cmd_note(self, c: AgentCommand) -> None:
        target = await self.target(c)
        if target is None or target[1] is None or c.private:
            await self.posts.reply(c, self.texts("agents.desk.need_topic"))
            return
        if not c.arg.strip():
            await self.posts.reply(c, self.texts("agents.desk.note_usage"))
            return
        await self.takeover.add_note(target[1], c.user_name, c.arg.strip())

    async def cmd_assign(self, c: AgentCommand) -> None:
        target = await self.target(c) if not c.private else None
        if target is None or target[1] is None:
            await self.posts.reply(c, self.texts("agents.desk.need_topic"))
            return
        t = target[1]
        who = c.arg.strip()
        if not who:
            await self.posts.reply(c, self.texts("agents.desk.assign_usage"))
            return
        found: tuple[int, str] | None = None
        if who.lstrip("-").isdigit():
            uid = int(who)
            found = (uid, self.st.agents_seen.get(uid, (who, ""))[0] or who)
        else:
            handle = who.lstrip("@").lower()
            for uid, (name, username) in self.st.agents_seen.items():
                if username and username.lower() == handle:
                    found = (uid, name or who)
                    break
        if found is None:
            await self.posts.reply(c, self.texts("agents.desk.assign_unknown", who=who[:40]))
            return
        await self.takeover.set_owner(t, found[0], found[1], "agents.desk.note_assigned", by=c.user_name)

    async def cmd_release(self, c: AgentCommand) -> None:
        target = await self.target(c) if not c.private else None
        if target is None or target[1] is None:
            await self.posts.reply(c, self.texts("agents.desk.need_topic"))
            return
        t = target[1]
        if not t.owner_id:
            await self.posts.reply(c, self.texts("agents.desk.release_none"))
            return
        await self.takeover.set_owner(t, 0, "", "agents.desk.note_released", by=c.user_name)

    async def cmd_help(self, c: AgentCommand) -> None:
        await self.posts.reply(c, self.texts("agents.desk.help"))

    async def cmd_open(self, c: AgentCommand, ref: int) -> None:
        cid = self.st.by_ref.get(ref)
        if cid is None:
            await self.posts.reply(c, self.texts("agents.desk.unknown_ref", ref=str(ref)))
            return
        t = self.st.topics[cid]
        t.watched_until = max(t.watched_until, self.clock.now() + self.options.watch_seconds)
        self.st.open_now.add(cid)  # served first: topic, card, then everything it missed
        if t.topic_cursor < t.seen_cursor:
            self.st.gap.add(cid)
        await self.posts.reply(c, self.texts("agents.desk.opened", ref=str(ref)))

    async def cmd_done(self, c: AgentCommand) -> None:
        target = await self.target(c)
        if target is None or target[1] is None:
            await self.posts.reply(c, self.texts("agents.desk.need_topic"))
            return
        t = target[1]
        if t.paused_until is None:
            await self.posts.reply(c, self.texts("agents.desk.done_not_paused"))
            return
        html = self.texts("agents.desk.done_prompt", name=display_name(t.user_name, self.texts)).html
        buttons = [
            (self.texts.plain("agents.desk.btn_resume"), f"{CALLBACK_PREFIX}r:{t.ref}"),
            (self.texts.plain("agents.desk.btn_menu"), f"{CALLBACK_PREFIX}m:{t.ref}"),
        ]
        thread = c.thread_id if not c.private else t.thread_id
        cid = t.conversation_id
        if c.private:  # no buttons in private: use the topic
            await self.posts.post_private(c.chat_id, html, kind="done", about=[cid])
            return
        self.st.urgent.append(lambda: self.posts.post(thread, html, buttons, kind="done", about=[cid]))
        self.signals.wake.set()

    async def on_callback(self, cb: AgentCallback) -> None:
        self.st.work_started = time.monotonic()
        try:
            await self.callback(cb)
        finally:
            self.st.work_started = 0.0

    async def callback(self, cb: AgentCallback) -> None:
        assert self.gateway is not None
        gw = self.gateway
        data = cb.data or ""
        if data.startswith(labelling.PREFIX):  # an agent labelled an unmatched message
            toast, html = await labelling.on_press(self.store, self.texts, data, cb.user_name)
            with contextlib.suppress(GatewayError):
                await gw.answer_callback(cb.callback_id, toast)
            if html:
                with contextlib.suppress(NotModified, MessageGone, GatewayError):
                    await gw.edit(cb.message_id, html)
            return
        if not data.startswith(CALLBACK_PREFIX):
            with contextlib.suppress(GatewayError):
                await gw.answer_callback(cb.callback_id)
            return
        if data.startswith(QUEUE_PREFIX):  # Claim / Resolve on a queue item
            await self.queue.on_press(cb)
            return
        kind, _, rest = data[len(CALLBACK_PREFIX) :].partition(":")
        ref_s, _, author_s = rest.partition(":")
        if kind in FORGET_CHOICES:
            await self.erase.on_press(cb, kind, int(ref_s) if ref_s.isdigit() else 0)
            return
        cid = self.st.by_ref.get(int(ref_s)) if ref_s.isdigit() else None
        t = self.st.topics.get(cid) if cid else None
        if t is not None and kind in ("s", "n", "a", "t") and author_s.isdigit():
            await self.takeover.on_held(cb, kind, t, int(author_s))
            return
        if t is not None and kind == "c":
            await self.on_claim(cb, t)
            return
        if t is None or t.paused_until is None:
            with contextlib.suppress(GatewayError):
                await gw.answer_callback(cb.callback_id, self.texts.plain("agents.desk.done_not_paused"))
            return
        mode = "menu" if kind == "m" else "agent"
        label = self.texts.plain("agents.desk.btn_menu" if mode == "menu" else "agents.desk.btn_resume")
        with contextlib.suppress(GatewayError):
            await gw.answer_callback(cb.callback_id)
        await self.takeover.resume(t, agent=cb.user_name, mode=mode)
        chosen = self.texts("agents.desk.done_chosen", choice=label, agent=cb.user_name or "?").html
        message_id = cb.message_id

        async def edit() -> None:
            with contextlib.suppress(NotModified, MessageGone):
                await gw.edit(message_id, chosen)

        self.st.urgent.append(edit)
        self.signals.wake.set()

    async def cmd_transcript(self, c: AgentCommand) -> None:
        assert self.gateway is not None
        target = await self.target(c)
        if target is None:
            await self.posts.reply(c, self.texts("agents.desk.need_topic"))
            return
        cid, t = target
        info = await reports.conversation(self.ports.db, cid)
        lines = await reports.transcript(self.ports.db, cid)
        data = reports.to_markdown(info, cid, lines).encode("utf-8")
        ref = str(t.ref) if t else cid
        name = display_name(info.user_name if info else "", self.texts)
        caption = self.texts("agents.desk.transcript_caption", name=name, ref=ref, count=str(len(lines))).html
        filename = f"transcript-{ref.replace(':', '-')}.md"
        made = self.st.work_started or time.monotonic()
        if c.private:
            try:
                await self.posts.post_private_document(
                    c.chat_id, filename, data, caption, kind="transcript", about=[cid], made=made
                )
            except GatewayError as exc:
                log.info("agents: transcript to %s not sent: %s", c.chat_id, exc)
            return
        thread = c.thread_id
        self.st.urgent.append(
            lambda: self.posts.post_document(thread, filename, data, caption, kind="transcript", about=[cid], made=made)
        )
        self.signals.wake.set()

    def flow_title(self, flow: str) -> str:
        return self.topics.symptom_title(flow) or flow

    def fmt_stats(self, period_key: str, s: reports.Stats) -> Html:
        t = self.texts
        rows = [
            t("agents.desk.stats_period", period=t.plain(period_key)),
            t(
                "agents.desk.stats_counts",
                conversations=str(s.conversations),
                resolved=str(s.resolved),
                escalated=str(s.escalated),
                quotes=str(s.quotes),
            ),
        ]
        if s.top:
            rows.append(
                t(
                    "agents.desk.stats_top",
                    top=", ".join(f"{self.flow_title(f)} ({n})" for f, n in s.top),
                )
            )
        rows.append(
            t(
                "agents.desk.stats_matcher",
                rejected=f"{s.rejected_share:.0%}",
                rejected_n=str(s.rejected),
                matched=str(s.matched),
                unsure=f"{s.unsure_share:.0%}",
            )
        )
        return join(rows)

    async def cmd_stats(self, c: AgentCommand) -> None:
        now = time.time()  # the counters' days are the wall clock's (bot/store/counters.py)
        today = await reports.stats(self.ports.db, reports.start_of_day(now))
        week = await reports.stats(self.ports.db, now - 7 * 86400)
        await self.posts.reply(
            c,
            join(
                [
                    self.fmt_stats("agents.desk.stats_today", today),
                    self.fmt_stats("agents.desk.stats_week", week),
                    await self.fmt_weeks(now),
                ],
                Html("\n\n", 2),
            ),
        )

    async def fmt_weeks(self, now: float, weeks: int = 4) -> Html:
        """Week by week (a monospace table), then the period's breakdowns."""
        t = self.texts
        table = reports.week_table(await reports.weekly(self.ports.db, weeks, now))
        f = await reports.desk_figures(self.ports.db, reports.week_start(now) - (weeks - 1) * 7 * 86400)
        none = t.plain("agents.desk.stats_none")

        def listed(key: str, pairs: list[str]) -> Html:
            return t(key) + Html.text(" " + (", ".join(pairs) or none))

        def rating(n_mean: tuple[int, float | None]) -> str:
            n, mean = n_mean
            return "-" if mean is None else f"{mean:.1f} ({n})"

        return join(
            [
                t("agents.desk.stats_weeks"),
                Html("<pre>", 0) + Html.text(table) + Html("</pre>", 0),
                listed("agents.desk.stats_steps", [f"{s} {n}" for s, n in f.fixed_after]),
                listed(
                    "agents.desk.stats_flows", [f"{self.flow_title(fl)} {r}/{e}" for fl, r, e in f.resolved_per_flow]
                ),
                listed("agents.desk.stats_agents", [f"{a} {n}" for a, n in f.takeovers]),
                t(
                    "agents.desk.stats_ratings",
                    bot=rating(f.ratings["bot"]),
                    agent=rating(f.ratings["agent"]),
                    comments=str(f.comments),
                ),
            ]
        )

    async def cmd_unmatched(self, c: AgentCommand) -> None:
        items = await reports.unmatched(self.ports.db, 15)
        if not items:
            await self.posts.reply(
                c,
                self.texts("agents.desk.unmatched_header") + NL + self.texts("agents.desk.unmatched_none"),
            )
            return
        rows = [self.texts("agents.desk.unmatched_header")]
        for u in items:
            cands = ", ".join(f"{i} {s:.0f}" for i, s in u.candidates[:3]) or "-"
            rows.append(Html.text(f"• “{clip(one_line(u.text), 150)}” — {u.decision}: {cands}"))
        await self.posts.reply(
            c,
            join(rows[: 1 + pack(rows[1:], MAX_VISIBLE - rows[0].visible - 1)]),
            about=[u.conversation_id for u in items],
            kind="unmatched",
        )
        if not c.private and self.gateway is not None:  # label them: one message each, with buttons
            gw, thread = self.gateway, c.thread_id
            for html, buttons in await labelling.offers(self.store, self.texts):
                self.st.urgent.append(lambda h=html, b=buttons: gw.send(thread, h, b))
            self.signals.wake.set()

    async def cmd_find(self, c: AgentCommand) -> None:
        query = c.arg.strip()
        if not query:
            await self.posts.reply(c, self.texts("agents.desk.find_usage"))
            return
        hits = await reports.find(self.ports.db, query, 15, include_bot=True)
        if not hits:
            await self.posts.reply(c, self.texts("agents.desk.find_none", query=clip(query, 60)))
            return
        rows = [self.texts("agents.desk.find_header", count=str(len(hits)), query=clip(query, 60))]
        for h in hits:
            t = self.st.topics.get(h.line.conversation_id)
            name = display_name(h.user_name, self.texts)
            who = self.topics.who(t) if t else Html.text(f"{name} {h.line.conversation_id}")
            rows.append(
                Html.text("• ")
                + who
                + Html.text(f" · {day_time(h.line.ts)} · ")
                + render_line(h.line, self.texts, out_limit=120, in_limit=160)
            )
        about = [h.line.conversation_id for h in hits]
        shown = join(rows[: 1 + pack(rows[1:], MAX_VISIBLE - rows[0].visible - 1)])
        await self.posts.reply(c, shown, about=about, kind="find")

    # -- /forget: administrators only, confirmed with a button that names the case ---------------
