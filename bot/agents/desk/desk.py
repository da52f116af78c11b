"""The agents' desk: mirrors every conversation into the agents' forum group, flags
escalations, relays agents' messages to users (pausing the bot), hands back, and answers
agents' commands. It sits beside the engine, never in a user's turn.

Shape (all in one event loop, nothing here imports ``telegram``):

* ``on_turn`` is an engine listener: it only puts the ``TurnRecord`` on a queue, so a user's
  reply is never slowed by the mirror. The *recorder* task takes records off that queue:
  escalation events become NOTE lines in the transcript (``escalation:<event>``), the case
  card is marked stale, the symptom noted.
* The *writer* task is the only one that talks to the group. It reads new transcript rows
  from SQLite (``messages.id`` cursors, so a restart loses nothing and repeats nothing) and
  makes at most one call per free slot of the group's budget (``GroupLimiter``: 20/min).
  Whatever accumulated while it waited goes out in one message: lines are batched. Order of
  work: answers to agents, topic deletions (privacy), the Escalations list, watched
  conversations (taken over or escalated), fresh lines, case cards, backfill.
  When more conversations are waiting than the budget can serve one topic each, fresh
  lines of several users go out together in one "Live feed" message (grouped per user,
  each with a link to their topic); their topics are filled in (backfilled) when the rush
  is over. In every topic and in the feed a user's lines appear in order, none twice.
* The *agent* task handles what agents do (messages, edits, commands, button presses) in
  the order they arrive; the Telegram side (``bot.tg.agents_gateway.install``) only queues them.
* The *timers* task raises "waiting" alerts for customers unanswered during a takeover, ends
  pauses nobody ended (telling a waiting customer when a person will reply), purges old
  transcripts, notices failed quote deliveries. Escalations are items of a queue (``queue``).

Parts (one module each, built here with the ports (``wiring.DeskPorts``), the state
(``state.DeskState``), the signals and the few other parts each calls — no part sees the
desk): ``Topics``, ``Posts``, ``Cards``, ``Queue``, ``Recorder``, ``Backlog``, ``Feed``,
``Writer``, ``Takeover``, ``Timers``, ``Erase``, and ``Tools`` (over a ``ToolContext``).
The desk itself starts and stops the tasks and routes what agents do to its part.

Without an agents' group (``gateway`` None) the desk still records escalations (for
``python -m bot stats``) and runs the retention purge.
"""


from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sqlite3
from collections import deque
from collections.abc import Awaitable, Callable, Iterable

import aiosqlite

from bot.core.engine import Engine, TurnRecord
from bot.core.errors import ContentError
from bot.store import SQLiteStore
from bot.store.database import StoreError

from ..limiter import GroupLimiter
from ..ports import (
    Clock,
    GroupGateway,
    QuoteStates,
    SystemClock,
)
from ..registry import Registry
from ..render import (
    Html,
    Texts,
    fit,
)
from ..rows import Topic
from .backlog import Backlog
from .cards import Cards
from .erase import Erase
from .feed import Feed
from .posts import Posts
from .queue import Queue
from .recorder import Recorder
from .records import (
    AgentCallback,
    AgentCommand,
    AgentMessage,
    DeskOptions,
    UserMedia,
    check_content,
)
from .state import DeskState
from .takeover import Takeover
from .timers import Timers
from .tools import ToolContext, Tools
from .topics import Topics
from .wiring import DeskPorts, Signals
from .writer import Writer

log = logging.getLogger(__name__)


class AgentDesk:
    """The desk: builds the ports, the state and the parts (each in its own module, given the
    few other parts it calls), runs the four tasks, routes what agents do to its part."""

    def __init__(
        self,
        engine: Engine,
        store: SQLiteStore,
        gateway: GroupGateway | None,
        *,
        chat_id: int | None = None,
        admin_ids: Iterable[int] = (),
        options: DeskOptions | None = None,
        clock: Clock | None = None,
        limiter: GroupLimiter | None = None,
        quotes: QuoteStates | None = None,
    ) -> None:
        problems = check_content(engine.content)
        if problems:
            raise ContentError(problems)
        o = options or DeskOptions()
        store_gateway = gateway if chat_id is not None else None
        self.st = DeskState()  # the mirror's working state (state.py)
        # The desk reads and writes on a connection of its own once started (WAL: readers never
        # wait), so its queries never queue in front of a user's turn on the engine's connection.
        self.ports = DeskPorts(
            engine=engine,
            store=store,
            gateway=store_gateway,
            chat_id=chat_id,
            admin_ids=frozenset(admin_ids),
            options=o,
            clock=clock or SystemClock(),
            limiter=limiter or GroupLimiter(o.group_limit, o.group_window, reserve=o.reserve),
            texts=Texts(engine.content),
            quotes=quotes,
            tx_lock=store.tx_lock,
            reg=Registry(store.db, store.db, store.tx_lock),
            rstore=store,
            db=store.db,
        )
        self.signals = Signals(self.st)
        self.topics = Topics(self.ports, self.st, self.signals)
        self.posts = Posts(self.ports, self.st, self.signals)
        self.cards = Cards(self.ports, self.st, self.signals, self.topics)
        self.queue = Queue(self.ports, self.st, self.signals, self.topics, self.posts)
        self.recorder = Recorder(self.ports, self.st, self.signals, self.topics, self.queue)
        self.pending = Backlog(self.ports, self.st, self.signals, self.topics)
        self.feed = Feed(
            self.ports,
            self.st,
            self.signals,
            topics=self.topics,
            posts=self.posts,
            queue=self.queue,
            backlog=self.pending,
        )
        self.writer = Writer(
            self.ports,
            self.st,
            self.signals,
            topics=self.topics,
            posts=self.posts,
            backlog=self.pending,
            cards=self.cards,
            feed=self.feed,
        )
        self.takeover = Takeover(
            self.ports,
            self.st,
            self.signals,
            topics=self.topics,
            posts=self.posts,
            queue=self.queue,
            recorder=self.recorder,
        )
        self.timers = Timers(
            self.ports,
            self.st,
            self.signals,
            topics=self.topics,
            queue=self.queue,
            recorder=self.recorder,
            takeover=self.takeover,
        )
        self.erase = Erase(self.ports, self.st, self.signals, self.topics, self.posts)
        self.tools = Tools(
            ToolContext(
                self.ports, self.st, self.signals, self.topics, self.posts, self.queue, self.takeover, self.erase
            )
        )
        p = self.ports
        self.engine, self.store, self.gateway, self.chat_id = engine, store, p.gateway, chat_id
        self.options, self.clock, self.texts = o, p.clock, p.texts
        self._own_db: aiosqlite.Connection | None = None
        # tasks and signals
        self.agent_inbox: asyncio.Queue[AgentMessage | AgentCommand | AgentCallback | UserMedia] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False

    @property
    def limiter(self) -> GroupLimiter:
        return self.ports.limiter

    @property
    def errors(self) -> int:
        return self.ports.errors

    @property
    def posted_lines(self) -> int:
        return self.ports.posted_lines

    @property
    def enabled(self) -> bool:
        """True when an agents' group is configured (else: escalations + purge only)."""
        return self.ports.enabled

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        path = getattr(self.store, "path", ":memory:")
        # SQLite: reads on a connection of the desk's own; PostgreSQL: the pool already is that
        if path != ":memory:" and getattr(getattr(self.store, "database", None), "dialect", "sqlite") == "sqlite":
            own = await aiosqlite.connect(path, isolation_level=None)
            await own.execute("PRAGMA busy_timeout = 10000")
            await own.execute("PRAGMA foreign_keys = ON")
            self._own_db = own
            self.ports.db = own
            self.ports.rstore = SQLiteStore(own, path)  # reads only (load_state)
            self.ports.reg = Registry(own, self.store.db, self.ports.tx_lock)
        reg = self.ports.reg
        if self.ports.enabled:
            start = await reg.meta("start_cursor")
            if start is None:  # first start with a group: mirror from now on, not the history
                self.st.start_cursor = await reg.max_message_id()
                await reg.set_meta("start_cursor", self.st.start_cursor)
            else:
                self.st.start_cursor = int(start)
            self.st.feed_cursor = int(await reg.meta("feed_cursor") or self.st.start_cursor)
            self.st.esc_cursor = int(await reg.meta("esc_cursor") or self.st.start_cursor)
            self.st.fetched = self.st.feed_cursor
            esc = await reg.meta("escalations_thread")
            live = await reg.meta("live_thread")
            self.st.esc_thread = int(esc) if esc else None
            self.st.live_thread = int(live) if live else None
            names = await reg.user_names()  # kept in conversations: no "User #1" after a restart
            for t in await reg.all_topics():
                t.user_name = names.get(t.conversation_id, "")
                self.topics.cache(t)
                if t.thread_id is not None:
                    self.st.card_work.add(t.conversation_id)  # re-rendered; edited only if it changed
                if t.topic_cursor < t.seen_cursor:
                    self.st.gap.add(t.conversation_id)
            for cid, chat, mid, kind, ts in await reg.media():
                self.st.media.setdefault(cid, deque()).append(UserMedia(cid, chat, mid, kind, ts))
            self.st.esc_pending = await reg.escalations_after(self.st.esc_cursor, limit=1000)
            self.st.esc_known = max([self.st.esc_cursor] + [r.id for r in self.st.esc_pending])
        if not self.options.record_only:  # a follower leaves pauses and timers to the leader
            await self.takeover.reconcile_pauses()
        if self.ports.enabled:
            await self.queue.load_waiting()
        if self.on_turn not in self.engine.listeners:
            self.engine.listeners.append(self.on_turn)
        self._spawn(self.recorder.run(), "agents-recorder")
        if not self.options.record_only:
            self._spawn(self.timers.run(), "agents-timers")
        if self.ports.enabled:
            self._spawn(self.writer.run(), "agents-writer")
            self._spawn(self._agent_worker(), "agents-inbox")
        log.info(
            "agents' desk started (%s)",
            f"group {self.chat_id}" if self.enabled else "no agents' group: escalations recorded, retention purge only",
        )

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        self._tasks.append(asyncio.ensure_future(coro))
        self._tasks[-1].set_name(name)

    async def close(self) -> None:
        if not self._started:
            return
        self._started = False
        with contextlib.suppress(ValueError):
            self.engine.listeners.remove(self.on_turn)
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):  # each task catches its own errors
                await task
        if self.ports.enabled:
            with contextlib.suppress(sqlite3.Error, StoreError):  # progress is saved lazily anyway
                await self.pending.save_seen(force=True)
                await self.ports.reg.set_meta("feed_cursor", self.st.feed_cursor)
        own, self._own_db = self._own_db, None
        if own is not None:
            self.ports.db = self.store.db
            self.ports.rstore = self.store
            self.ports.reg = Registry(self.store.db, self.store.db, self.ports.tx_lock)
            await own.close()

    async def __aenter__(self) -> AgentDesk:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the engine listener: nothing but a queue -------------------------------------------------
    async def on_turn(self, record: TurnRecord) -> None:
        self.recorder.inbox.put_nowait(record)

    def submit(self, item: AgentMessage | AgentCommand | AgentCallback | UserMedia) -> None:
        """Queue something an agent did (called by the Telegram handler, in arrival order) — or
        a user's media to copy into their topic (noted at once, before the engine stores its
        transcript line, so the writer always knows it; stored by the agent task)."""
        if isinstance(item, UserMedia):
            if not self.ports.enabled or self.st.forgotten.get(item.conversation_id) == math.inf:
                return
            self.st.media.setdefault(item.conversation_id, deque()).append(item)
        self.agent_inbox.put_nowait(item)

    async def _agent_worker(self) -> None:
        """The agent task: what agents did, in arrival order, each to its part."""
        while True:
            item = await self.agent_inbox.get()
            self.st.agent_busy = 1
            try:
                if isinstance(item, AgentMessage):
                    if item.edited:
                        await self.takeover.on_edit(item)
                    else:
                        await self.takeover.on_message(item)
                elif isinstance(item, AgentCommand):
                    await self.tools.on_command(item)
                elif isinstance(item, AgentCallback):
                    await self.tools.on_callback(item)
                elif isinstance(item, UserMedia):
                    key = (item.chat_id, item.message_id)
                    if key in self.st.media_done:  # copied already (or dropped): nothing to keep
                        self.st.media_done.discard(key)
                    elif item.conversation_id in self.st.media:
                        await self.ports.reg.add_media(
                            item.conversation_id, item.chat_id, item.message_id, item.kind, item.ts
                        )
            except Exception:  # the agents' inbox boundary: one bad item must not stop the desk
                self.ports.errors += 1
                log.exception("agents: handling %s failed", type(item).__name__)
            finally:
                self.st.agent_busy = 0
                self.agent_inbox.task_done()
                self.signals.new_rows()
                self.signals.tick()

    # -- for other features -----------------------------------------------------------------------
    async def alert(self, text: str) -> None:
        """``Alerter`` for the quote feature: a line in the Escalations topic."""
        if not self.ports.enabled:
            log.warning("ALERT: %s", text)
            return
        html = fit(Html.text("⚠️ " + text))

        async def send() -> None:
            thread = await self.feed.escalations_thread(urgent=True)
            await self.feed.send_or_forget_thread(thread, html.html, "escalations")

        self.st.urgent.append(send)
        self.signals.wake.set()

    async def report_event(self, conversation_id: str, event: str) -> None:
        """Flag an event that happened outside a turn (e.g. ``quote_failed``)."""
        topic = await self.topics.ensure(conversation_id) if self.ports.enabled else None
        await self.recorder.flag(conversation_id, topic, event)
        self.signals.wake.set()

    # -- waiting (tests, benchmark) ---------------------------------------------------------------
    def backlog(self) -> dict[str, int]:
        return {
            "fresh_lines": sum(len(q) for q in self.st.pending.values()),
            "fresh_conversations": sum(1 for q in self.st.pending.values() if q),
            "urgent": len(self.st.urgent),
            "escalations": len(self.st.esc_pending),
            "records": self.recorder.inbox.qsize(),
            "agent_inbox": self.agent_inbox.qsize() + self.st.agent_busy,
            "gaps": len(self.st.gap),
            "cards": len(self.st.card_work),
            "trash": len(self.st.trash) + len(self.st.clean),
        }

    def caught_up(self, *, full: bool = False) -> bool:
        """Every line is visible in the group (``full``: in its own topic, cards current too)."""
        b = self.backlog()
        live = not (
            b["fresh_lines"]
            or b["urgent"]
            or b["escalations"]
            or b["records"]
            or b["agent_inbox"]
            or b["trash"]
            or self.st.busy
        )
        if not full:
            return live
        return live and not (b["gaps"] or b["cards"])

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"agents' desk: timed out waiting for {what or predicate}; backlog {self.backlog()}")
            self.signals.progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.signals.progress.wait(), min(remaining, 0.2))

    async def settle(self, timeout: float = 10.0, *, full: bool = False) -> None:
        """Wait until the mirror caught up: records processed, every stored line read and
        posted (``full``: also in its own topic, with current cards)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            await self.wait_until(
                lambda: self.caught_up(full=full), max(0.01, deadline - loop.time()), "the mirror to catch up"
            )
            if not self.ports.enabled or await self.ports.reg.max_message_id() <= self.st.fetched:
                if self.caught_up(full=full):
                    return
            else:
                self.signals.new_rows()
            if loop.time() > deadline:
                raise TimeoutError(f"agents' desk: not caught up; backlog {self.backlog()}")
            self.signals.progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.signals.progress.wait(), 0.2)


    # -- for the feature and the tests ------------------------------------------------------------
    def topic_of(self, conversation_id: str) -> Topic | None:
        return self.topics.topic_of(conversation_id)

    def forgetting(self, conversation_id: str, *, by_user: bool = False) -> None:
        """Around a deletion (the feature's /forget and the desk's own): nothing of it is posted meanwhile."""
        self.topics.forgetting(conversation_id, by_user=by_user)

    def forgotten(self, conversation_id: str, upto_id: int) -> None:
        self.topics.forgotten(conversation_id, upto_id)

    async def is_agent(self, user_id: int) -> bool:
        return await self.tools.is_agent(user_id)

    async def may_erase(self, user_id: int) -> bool:
        return await self.erase.may_erase(user_id)

    async def forget(self, conversation_id: str) -> None:
        await self.erase.forget(conversation_id)

    async def purge(self, now: float | None = None) -> int:
        return await self.timers.purge(now)

    async def resume(self, t: Topic, *, agent: str = "", mode: str = "agent") -> None:
        await self.takeover.resume(t, agent=agent, mode=mode)
