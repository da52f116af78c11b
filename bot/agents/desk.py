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
* The *timers* task ends pauses nobody ended, purges old transcripts, notices failed quote
  deliveries.

Without an agents' group (``gateway`` None) the desk still records escalations (for
``python -m bot stats``) and runs the retention purge.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from bot.core.engine import Engine, TurnRecord
from bot.core.errors import ContentError, Problem
from bot.core.messages import EventKind, Inbound
from bot.core.ports import Direction, Entry

from . import labelling, privacy, reports
from .limiter import GroupLimiter
from .ports import (
    Clock,
    GatewayError,
    GroupGateway,
    MessageGone,
    NotModified,
    RetryLater,
    SystemClock,
    ThreadNotFound,
    UserBlocked,
)
from .registry import Line, Registry, Topic
from .render import (
    MAX_CAPTION,
    MAX_VISIBLE,
    NL,
    CardData,
    Html,
    Texts,
    clip,
    day_time,
    display_name,
    fit,
    flag_label,
    join,
    link,
    one_line,
    pack,
    render_card,
    render_line,
    tg_len,
    topic_link,
    topic_name,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

# Commands only agents may use. In a private chat anyone else gets no answer at all.
AGENT_ONLY_COMMANDS = frozenset({"done", "transcript", "stats", "unmatched", "find"})
# Events listed in the Escalations topic; other flags only mark the user's topic and card.
ESCALATIONS = (
    "human_requested",
    "still_broken",
    "not_understood_twice",
    "quote_sent",
    "quote_failed",
)
NOT_SYMPTOMS = frozenset({"main_menu", "common", "human_agent", "quote"})
NO_CAPTION = frozenset({"sticker", "video_note", "location", "venue", "contact", "dice", "poll"})
MAX_PENDING = 1500  # transcript rows the mirror holds in memory (the rest waits in SQLite)
RESUME_COMMAND = "resume"  # the engine command that hands a conversation back (bot.agents.commands)
CALLBACK_PREFIX = "ag:"

REQUIRED_KEYS: tuple[str, ...] = (
    "agents.joined",
    "agents.from_person",
    "agents.correction",
    "agents.desk.topic_escalations",
    "agents.desk.topic_live",
    "agents.desk.anonymous",
    "agents.desk.card_title",
    "agents.desk.card_problem",
    "agents.desk.card_said",
    "agents.desk.card_no_symptom",
    "agents.desk.card_bot",
    "agents.desk.card_paused",
    "agents.desk.card_blocked",
    "agents.desk.card_flags",
    "agents.desk.card_steps",
    "agents.desk.card_storage",
    "agents.desk.card_details",
    "agents.desk.card_quote",
    "agents.desk.card_counts",
    "agents.desk.storage_total",
    "agents.desk.storage_needed",
    "agents.desk.storage_short",
    "agents.desk.storage_plan",
    "agents.desk.escalation_line",
    "agents.desk.note_paused",
    "agents.desk.note_handback_resume",
    "agents.desk.note_handback_menu",
    "agents.desk.note_expired",
    "agents.desk.note_blocked",
    "agents.desk.note_failed",
    "agents.desk.note_not_telegram",
    "agents.desk.note_forgotten",
    "agents.desk.note_edited",
    "agents.desk.edited_as_correction",
    "agents.desk.done_prompt",
    "agents.desk.btn_resume",
    "agents.desk.btn_menu",
    "agents.desk.done_not_paused",
    "agents.desk.done_chosen",
    "agents.desk.need_topic",
    "agents.desk.opened",
    "agents.desk.unknown_ref",
    "agents.desk.help",
    "agents.desk.transcript_caption",
    "agents.desk.stats_period",
    "agents.desk.stats_today",
    "agents.desk.stats_week",
    "agents.desk.stats_counts",
    "agents.desk.stats_top",
    "agents.desk.stats_matcher",
    "agents.desk.unmatched_header",
    "agents.desk.unmatched_none",
    "agents.desk.find_header",
    "agents.desk.find_none",
    "agents.desk.find_usage",
    *(f"agents.desk.flag.{e}" for e in (*ESCALATIONS, "data_at_risk")),
)


def check_content(content: Any) -> list[Problem]:
    """The texts the desk needs (``python -m bot check`` does not know them)."""
    return [
        Problem("content/<lang>/agents.yaml", key, "required text missing")
        for key in REQUIRED_KEYS
        if not content.has(key)
    ]


@dataclass(frozen=True)
class DeskOptions:
    pause_seconds: float = 30 * 60.0  # AGENT_PAUSE_MINUTES
    retention_days: int = 90  # RETENTION_DAYS
    group_limit: int = 20  # calls into the agents' group per window (Telegram: 20/min)
    group_window: float = 60.0
    reserve: int = 2  # slots per window kept for answers to agents and escalations
    digest_threshold: int = 4  # more conversations waiting than this: one Live feed message
    watch_seconds: float = 3600.0  # an escalated conversation stays "watched" this long
    repeat_seconds: float = 3600.0  # the same flag for a conversation is raised again after this
    purge_every: float = 3600.0
    quote_poll_every: float = 30.0
    topic_out_limit: int = 300  # characters of a bot reply shown in a topic (the file has all)
    digest_out_limit: int = 80
    digest_in_limit: int = 300
    member_cache_seconds: float = 600.0
    record_every: float = 0.05  # real seconds the recorder collects turns before one pass
    max_backoff: float = 60.0


# -- what agents do, as plain records (filled in by bot.tg.agents_gateway) -----------------------


@dataclass(frozen=True)
class AgentMessage:
    chat_id: int
    thread_id: int | None
    message_id: int
    user_id: int
    user_name: str
    text: str  # plain text or caption
    html: str  # the same with the agent's formatting, as Telegram HTML
    media: str = ""  # photo, document, ... ("" for text)
    edited: bool = False


@dataclass(frozen=True)
class AgentCommand:
    chat_id: int
    thread_id: int | None
    message_id: int
    user_id: int
    user_name: str
    name: str  # without the slash and @bot
    arg: str
    private: bool = False  # sent to the bot in a private chat (admins, agents)


@dataclass(frozen=True)
class AgentCallback:
    callback_id: str
    chat_id: int
    message_id: int
    thread_id: int | None
    user_id: int
    user_name: str
    data: str


def conversation_lock(engine: Engine, conversation_id: str) -> asyncio.Lock:
    """The engine's own per-conversation lock: flipping ``paused`` under it means no turn can
    load the old value and save it back over ours."""
    getter = getattr(engine, "lock_for", None)
    if callable(getter):
        lock = getter(conversation_id)
        assert isinstance(lock, asyncio.Lock)
        return lock
    locks = engine._locks  # same dictionary Engine.handle uses
    lock = locks.get(conversation_id)
    if lock is None:
        lock = asyncio.Lock()
        locks[conversation_id] = lock
    return lock


class AgentDesk:
    def __init__(
        self,
        engine: Engine,
        store: Any,
        gateway: GroupGateway | None,
        *,
        chat_id: int | None = None,
        admin_ids: Iterable[int] = (),
        options: DeskOptions | None = None,
        clock: Clock | None = None,
        limiter: GroupLimiter | None = None,
    ) -> None:
        problems = check_content(engine.content)
        if problems:
            raise ContentError(problems)
        self.engine = engine
        self.store = store  # SQLiteStore: db, load_state, set_flags, add_entries
        self.gateway = gateway if chat_id is not None else None
        self.chat_id = chat_id
        self.admin_ids = frozenset(admin_ids)
        self.options = options or DeskOptions()
        self.clock: Clock = clock or SystemClock()
        o = self.options
        self.limiter = limiter or GroupLimiter(o.group_limit, o.group_window, reserve=o.reserve)
        self.texts = Texts(engine.content)
        # The desk reads and writes on a connection of its own (WAL: readers never wait), so
        # its queries never queue in front of a user's turn on the engine's connection.
        self.db = store.db
        self.rstore = store
        self._own_db: Any = None
        self._tx_lock = getattr(store, "tx_lock", None)
        self.reg = Registry(store.db, store.db, self._tx_lock)
        # the mirror
        self._topics: dict[str, Topic] = {}
        self._by_thread: dict[int, str] = {}
        self._by_ref: dict[int, str] = {}
        self._pending: dict[str, deque[Line]] = {}
        self._pending_rows = 0
        self._more = False
        self._esc_known = 0
        self._esc_pending: list[Line] = []
        self._urgent: deque[Callable[[], Awaitable[Any]]] = deque()
        self._card_work: set[str] = set()
        self._gap: set[str] = set()
        self._open_now: set[str] = set()
        self._escalated: set[str] = set()
        self._trash: deque[int] = deque()
        self._trash_dirty = True
        self._maybe_new = True
        self._writer_idle = False
        self._esc_hint = False
        self._feed_saved_at = 0.0
        self._seen_dirty: set[str] = set()
        self._seen_saved_at = 0.0
        self._forgotten: dict[str, float] = {}
        self._fetched = 0
        self._feed_cursor = 0
        self._start_cursor = 0
        self._esc_cursor = 0
        self._esc_thread: int | None = None
        self._live_thread: int | None = None
        self._flag_times: dict[tuple[str, str], float] = {}
        self._members: dict[int, tuple[bool, float]] = {}
        self._ensure_lock = asyncio.Lock()
        # tasks and signals
        self._inbox: asyncio.Queue[TurnRecord] = asyncio.Queue()
        self.agent_inbox: asyncio.Queue[AgentMessage | AgentCommand | AgentCallback] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._timer_wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._busy = False
        self._agent_busy = 0
        self.errors = 0
        self.posted_lines = 0

    @property
    def enabled(self) -> bool:
        """True when an agents' group is configured (else: escalations + purge only)."""
        return self.gateway is not None

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        path = getattr(self.store, "path", ":memory:")
        if path != ":memory:":
            import aiosqlite

            from bot.store import SQLiteStore

            own = await aiosqlite.connect(path, isolation_level=None)
            await own.execute("PRAGMA busy_timeout = 10000")
            await own.execute("PRAGMA foreign_keys = ON")
            self._own_db = own
            self.db = own
            self.rstore = SQLiteStore(own, path)  # reads only (load_state)
            self.reg = Registry(own, self.store.db, self._tx_lock)
        reg = self.reg
        if self.enabled:
            start = await reg.meta("start_cursor")
            if start is None:  # first start with a group: mirror from now on, not the history
                self._start_cursor = await reg.max_message_id()
                await reg.set_meta("start_cursor", self._start_cursor)
            else:
                self._start_cursor = int(start)
            self._feed_cursor = int(await reg.meta("feed_cursor") or self._start_cursor)
            self._esc_cursor = int(await reg.meta("esc_cursor") or self._start_cursor)
            self._fetched = self._feed_cursor
            esc = await reg.meta("escalations_thread")
            live = await reg.meta("live_thread")
            self._esc_thread = int(esc) if esc else None
            self._live_thread = int(live) if live else None
            for t in await reg.all_topics():
                self._cache(t)
                if t.thread_id is not None:
                    self._card_work.add(t.conversation_id)  # re-rendered; edited only if it changed
                if t.topic_cursor < t.seen_cursor:
                    self._gap.add(t.conversation_id)
            self._esc_pending = await reg.escalations_after(self._esc_cursor, limit=1000)
            self._esc_known = max([self._esc_cursor] + [r.id for r in self._esc_pending])
        await self._reconcile_pauses()
        if self.on_turn not in self.engine.listeners:
            self.engine.listeners.append(self.on_turn)
        privacy.add_forget_watcher(self)
        self._spawn(self._recorder(), "agents-recorder")
        self._spawn(self._timers(), "agents-timers")
        if self.enabled:
            self._spawn(self._writer(), "agents-writer")
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
        privacy.remove_forget_watcher(self)
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.enabled:
            with contextlib.suppress(Exception):
                await self._save_seen(force=True)
                await self.reg.set_meta("feed_cursor", self._feed_cursor)
        own, self._own_db = self._own_db, None
        if own is not None:
            self.db = self.store.db
            self.rstore = self.store
            self.reg = Registry(self.store.db, self.store.db, self._tx_lock)
            await own.close()

    async def __aenter__(self) -> AgentDesk:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the engine listener: nothing but a queue -------------------------------------------------
    async def on_turn(self, record: TurnRecord) -> None:
        self._inbox.put_nowait(record)

    def submit(self, item: AgentMessage | AgentCommand | AgentCallback) -> None:
        """Queue something an agent did (called by the Telegram handler, in arrival order)."""
        self.agent_inbox.put_nowait(item)

    # -- for other features -----------------------------------------------------------------------
    async def alert(self, text: str) -> None:
        """``Alerter`` for the quote feature: a line in the Escalations topic."""
        if not self.enabled:
            log.warning("ALERT: %s", text)
            return
        html = fit(Html.text("⚠️ " + text))

        async def send() -> None:
            thread = await self._escalations_thread(urgent=True)
            await self._send_or_forget_thread(thread, html.html, "escalations")

        self._urgent.append(send)
        self._wake.set()

    async def report_event(self, conversation_id: str, event: str) -> None:
        """Flag an event that happened outside a turn (e.g. ``quote_failed``)."""
        topic = await self._ensure(conversation_id) if self.enabled else None
        await self._flag(conversation_id, topic, event)
        self._wake.set()

    # -- waiting (tests, benchmark) ---------------------------------------------------------------
    def backlog(self) -> dict[str, int]:
        return {
            "fresh_lines": sum(len(q) for q in self._pending.values()),
            "fresh_conversations": sum(1 for q in self._pending.values() if q),
            "urgent": len(self._urgent),
            "escalations": len(self._esc_pending),
            "records": self._inbox.qsize(),
            "agent_inbox": self.agent_inbox.qsize() + self._agent_busy,
            "gaps": len(self._gap),
            "cards": len(self._card_work),
            "trash": len(self._trash),
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
            or self._busy
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
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), min(remaining, 0.2))

    async def settle(self, timeout: float = 10.0, *, full: bool = False) -> None:
        """Wait until the mirror caught up: records processed, every stored line read and
        posted (``full``: also in its own topic, with current cards)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            await self.wait_until(
                lambda: self.caught_up(full=full), max(0.01, deadline - loop.time()), "the mirror to catch up"
            )
            if not self.enabled or await self.reg.max_message_id() <= self._fetched:
                if self.caught_up(full=full):
                    return
            else:
                self._new_rows()
            if loop.time() > deadline:
                raise TimeoutError(f"agents' desk: not caught up; backlog {self.backlog()}")
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), 0.2)

    def _tick(self) -> None:
        self._progress.set()

    # -- the topic cache --------------------------------------------------------------------------
    def _cache(self, t: Topic) -> Topic:
        self._topics[t.conversation_id] = t
        self._by_ref[t.ref] = t.conversation_id
        if t.thread_id is not None:
            self._by_thread[t.thread_id] = t.conversation_id
        return t

    async def _ensure(self, cid: str) -> Topic:
        t = self._topics.get(cid)
        if t is not None:
            return t
        async with self._ensure_lock:
            t = self._topics.get(cid)
            if t is not None:
                return t
            t = await self.reg.topic(cid) or await self.reg.create_topic(cid, self._start_cursor)
            return self._cache(t)

    def topic_of(self, conversation_id: str) -> Topic | None:
        return self._topics.get(conversation_id)

    def _drop(self, cid: str) -> None:
        t = self._topics.pop(cid, None)
        if t is not None:
            self._by_ref.pop(t.ref, None)
            if t.thread_id is not None:
                self._by_thread.pop(t.thread_id, None)
        self._pending_rows -= len(self._pending.pop(cid, ()))
        self._card_work.discard(cid)
        self._gap.discard(cid)
        self._open_now.discard(cid)
        self._escalated.discard(cid)
        self._esc_pending = [r for r in self._esc_pending if r.conversation_id != cid]
        for key in [k for k in self._flag_times if k[0] == cid]:
            del self._flag_times[key]

    # forget watchers (bot.agents.privacy calls these around a deletion)
    def forgetting(self, conversation_id: str) -> None:
        self._forgotten[conversation_id] = math.inf
        self._drop(conversation_id)

    def forgotten(self, conversation_id: str, upto_id: int) -> None:
        self._forgotten[conversation_id] = upto_id
        self._drop(conversation_id)
        self._trash_dirty = True
        self._wake.set()

    def _is_watched(self, t: Topic) -> bool:
        return t.paused_until is not None or t.watched_until > self.clock.now()

    def _mark_card(self, t: Topic) -> None:
        t.card_dirty = True
        if t.thread_id is not None:
            self._card_work.add(t.conversation_id)

    def _symptom_of(self, flow: str) -> str:
        f = self.engine.flows.flows.get(flow)
        if f is None or not f.intents or flow in NOT_SYMPTOMS:
            return ""
        return flow

    def _symptom_title(self, flow: str) -> str:
        f = self.engine.flows.flows.get(flow)
        if f is None:
            return ""
        try:
            return self.engine.content.raw(f.title)
        except KeyError:
            return flow

    # -- the recorder -----------------------------------------------------------------------------
    async def _recorder(self) -> None:
        while True:
            batch = [await self._inbox.get()]
            self._busy = True
            # gather what else arrives in the next moment: one pass (and one write) for many
            # turns instead of a wake-up per turn; nothing waits on this but the mirror
            await asyncio.sleep(self.options.record_every)
            while not self._inbox.empty():
                batch.append(self._inbox.get_nowait())
            self._busy = True
            try:
                await self._record_batch(batch)
            except Exception:
                self.errors += 1
                log.exception("agents: recording %d turn(s) failed", len(batch))
            finally:
                self._busy = False
            self._new_rows()
            self._tick()

    async def _record_batch(self, batch: list[TurnRecord]) -> None:
        """What the mirror needs from a batch of turns, with as few writes as possible (the
        database is the users' too): new conversations registered together, changed topics
        saved together; escalation events become NOTE lines."""
        records = [
            r for r in batch if "forgotten" not in r.events and self._forgotten.get(r.conversation_id) != math.inf
        ]
        if self.enabled:
            symptoms = {r.conversation_id: self._symptom_of(r.state.flow) for r in records}
            await self._ensure_many([r.conversation_id for r in records], symptoms)
        for rec in records:
            topic = self._topics.get(rec.conversation_id) if self.enabled else None
            if topic is None:
                continue
            if rec.state.user_name and rec.state.user_name != topic.user_name:
                topic.user_name = rec.state.user_name
            symptom = self._symptom_of(rec.state.flow)
            if symptom and symptom != topic.symptom:
                topic.symptom = symptom  # saved with the topic's next save (no write per turn)
                if topic.thread_id is not None:
                    topic.name_dirty = True
            self._mark_card(topic)
        for rec in records:
            events = list(rec.events)
            # "Talk to a person" is the human_agent flow: flagged even if the flow raises nothing
            if rec.state.flow == "human_agent" and "human_requested" not in events:
                events.append("human_requested")
            for ev in events:
                try:
                    await self._flag(rec.conversation_id, self._topics.get(rec.conversation_id), ev)
                except Exception:
                    self.errors += 1
                    log.exception("agents: flagging %s for %s failed", ev, rec.conversation_id)

    async def _ensure_many(self, cids: list[str], symptoms: dict[str, str] | None = None) -> None:
        missing = list(dict.fromkeys(c for c in cids if c not in self._topics))
        if not missing:
            return
        async with self._ensure_lock:
            missing = [c for c in missing if c not in self._topics]
            if missing:
                for t in await self.reg.create_topics(missing, self._start_cursor, symptoms):
                    if t.conversation_id not in self._topics:
                        self._cache(t)

    async def _flag(self, cid: str, topic: Topic | None, event: str) -> None:
        if event in ("paused_message", "forgotten", ""):
            return
        now = self.clock.now()
        last = self._flag_times.get((cid, event))
        if last is not None and now - last < self.options.repeat_seconds:
            return
        self._flag_times[(cid, event)] = now
        kind = f"escalation:{event}" if event in ESCALATIONS else f"flag:{event}"
        await self.store.add_entries(cid, [Entry(Direction.NOTE, flag_label(event, self.texts), kind=kind)])
        self._new_rows(escalation=event in ESCALATIONS)
        if topic is not None:
            topic.add_flag(event)
            if event == "quote_sent":
                topic.quote_state = topic.quote_state or "sent"
            elif event == "quote_failed":
                topic.quote_state = "failed"
            if event in ESCALATIONS:
                topic.escalated_until = now + self.options.watch_seconds
                self._escalated.add(cid)
            await self.reg.save(topic)
            self._mark_card(topic)

    async def _note(self, cid: str, text: Html | str) -> None:
        plain = text if isinstance(text, str) else _unhtml(text)
        await self.store.add_entries(cid, [Entry(Direction.NOTE, plain, kind="note")])
        self._new_rows()

    # -- the writer -------------------------------------------------------------------------------
    async def _writer(self) -> None:
        backoff = 0.0
        resume_at = 0.0
        while True:
            try:
                if self._trash_dirty:
                    self._trash_dirty = False
                    self._trash = deque(await self.reg.trashed())
                # answers to agents and privacy deletions may use the reserved slots; everything
                # else (escalations first) is spread evenly over the window
                urgent = bool(self._urgent or self._trash)
                if not urgent and not (self._maybe_new or self._more or self._esc_hint) and not self._normal_work():
                    await self._save_seen(force=True)  # idle: a good moment to persist progress
                    self._tick()
                    await self._idle()
                    continue
                delay = self.limiter.delay(urgent)
                if backoff:
                    delay = max(delay, resume_at - self.limiter.clock.now())
                if delay > 0:
                    self._tick()
                    await self._wait(self._wake, delay)
                    continue
                if self._esc_hint:
                    self._esc_hint = False
                    await self._fetch_escalations()
                    continue
                if (self._maybe_new or self._more) and self._pending_rows < MAX_PENDING:
                    # read new transcript rows only when a call can go out: one query per slot,
                    # not one per user turn (the database is the users' too)
                    self._maybe_new = False
                    await self._fetch()
                    continue
                try:
                    called = await self._step(urgent)
                    backoff = 0.0
                except RetryLater as exc:
                    log.warning("agents' group: 429, waiting %.0f s", exc.retry_after)
                    self.limiter.block(exc.retry_after)
                    called = True
                except GatewayError as exc:
                    self.errors += 1
                    backoff = min(self.options.max_backoff, backoff * 2 or 1.0)
                    resume_at = self.limiter.clock.now() + backoff
                    log.warning("agents' group: %s; retrying in %.0f s", exc, backoff)
                    called = True
                self._tick()
                if not called:
                    await self._idle()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop the mirror for good
                self.errors += 1
                log.exception("agents' writer failed; continuing")
                await self._wait(self._wake, 1.0)

    async def _idle(self) -> None:
        self._writer_idle = True
        try:
            await self._wait(self._wake, None)
        finally:
            self._writer_idle = False

    def _new_rows(self, *, escalation: bool = False) -> None:
        """Rows were stored (a turn, a note, a flag): the writer reads them at its next slot.
        It is woken only if idle (or for an escalation, which may use a reserved slot sooner);
        when it waits for a slot it will look anyway — no wake-up per user turn."""
        self._maybe_new = True
        if escalation:
            self._esc_hint = True
        if self._writer_idle or escalation:
            self._wake.set()

    async def _wait(self, event: asyncio.Event, timeout: float | None, clock: Clock | None = None) -> None:
        if event.is_set():
            event.clear()
            return
        waiter = asyncio.ensure_future(event.wait())
        waits: set[asyncio.Future[Any]] = {waiter}
        if timeout is not None:
            waits.add(asyncio.ensure_future((clock or self.limiter.clock).sleep(timeout)))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
            for w in waits:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await w
        event.clear()

    async def _fetch(self) -> None:
        """Read new transcript rows (oldest first) into the per-conversation queues — at most
        ``MAX_PENDING`` held in memory: a longer backlog stays in the database until needed."""
        self._more = False
        while self._pending_rows < MAX_PENDING:
            rows = await self.reg.rows_after(self._fetched, 200)
            await self._ensure_many(
                [
                    r.conversation_id
                    for r in rows
                    if r.conversation_id not in self._topics and self._forgotten.get(r.conversation_id, -1) < r.id
                ]
            )
            for r in rows:
                self._fetched = r.id
                cid = r.conversation_id
                barrier = self._forgotten.get(cid)
                if barrier is not None and r.id <= barrier:
                    continue
                t = self._topics.get(cid) or await self._ensure(cid)
                if r.id <= t.seen_cursor:
                    continue
                self._pending.setdefault(cid, deque()).append(r)
                self._pending_rows += 1
                if r.direction == "note" and r.kind.startswith("escalation:") and r.id > self._esc_known:
                    self._esc_pending.append(r)
                    self._esc_known = r.id
            if len(rows) < 200:
                break
            await asyncio.sleep(0)  # a long backlog is read in slices: users' turns go between
        else:
            self._more = True
        await self._advance_feed()

    async def _fetch_escalations(self) -> None:
        """Escalations are read ahead of the backlog: they must not wait behind it."""
        for r in await self.reg.escalations_after(self._esc_known, 200):
            if self._forgotten.get(r.conversation_id, -1) < r.id and r.conversation_id in self._topics:
                self._esc_pending.append(r)
            self._esc_known = max(self._esc_known, r.id)

    async def _save_seen(self, force: bool = False) -> None:
        """Persist Live-feed progress lazily (every few seconds): after a crash at most those
        seconds of lines are posted to the feed again; topics have their own cursors."""
        now = time.monotonic()
        if self._seen_dirty and (force or now - self._seen_saved_at > 2.0):
            self._seen_saved_at = now
            topics = [self._topics[c] for c in self._seen_dirty if c in self._topics]
            self._seen_dirty.clear()
            await self.reg.save_seen(topics)

    async def _advance_feed(self) -> None:
        heads = [q[0].id for q in self._pending.values() if q]
        feed = (min(heads) - 1) if heads else self._fetched
        if feed > self._feed_cursor:
            self._feed_cursor = feed
            now = time.monotonic()
            if now - self._feed_saved_at > 2.0:  # lazily: the topics' own cursors prevent repeats
                self._feed_saved_at = now
                await self.reg.set_meta("feed_cursor", feed)

    def _normal_work(self) -> bool:
        return (
            bool(self._esc_pending)
            or any(self._pending.values())
            or bool(self._card_work or self._gap or self._open_now or self._escalated)
        )

    async def _call(self, urgent: bool, fn: Callable[[], Awaitable[T]]) -> T:
        """One call into the group, counted against its budget whatever the outcome."""
        self.limiter.started(urgent)
        try:
            return await fn()
        finally:
            self.limiter.finished()

    async def _step(self, urgent: bool) -> bool:
        """Make at most one call into the group; False if nothing needed one."""
        assert self.gateway is not None
        gw = self.gateway
        if self._urgent:
            job = self._urgent.popleft()
            try:
                await self._call(True, job)
            except (RetryLater, ThreadNotFound):
                self._urgent.appendleft(job)
                raise
            except GatewayError as exc:  # an answer that can't be posted is not retried forever
                log.warning("agents: an answer to agents could not be posted: %s", exc)
            return True
        if self._trash:
            thread = self._trash[0]
            try:
                await self._call(True, lambda: gw.delete_topic(thread))
            except (ThreadNotFound, MessageGone):
                pass
            except GatewayError as exc:
                if not isinstance(exc, RetryLater):
                    log.warning("agents: deleting topic %s failed (%s); not retried", thread, exc)
                else:
                    raise
            self._trash.popleft()
            await self.reg.untrash(thread)
            return True
        if self._esc_pending:
            return await self._post_escalations()
        fresh = [cid for cid, q in self._pending.items() if q]
        candidates = set(fresh) | self._gap | self._open_now
        watched = [cid for cid in candidates if (t := self._topics.get(cid)) is not None and self._is_watched(t)]
        for cid in sorted(watched, key=self._age):
            if await self._serve_topic(self._topics[cid]):
                return True
            self._open_now.discard(cid)
        others = [cid for cid in fresh if cid not in watched]
        if others:
            if len(others) <= self.options.digest_threshold:
                for cid in sorted(others, key=lambda c: self._pending[c][0].id):
                    if await self._serve_topic(self._topics[cid]):
                        return True
            elif await self._post_digest(others):
                return True
        now = self.clock.now()
        for cid in sorted(self._escalated, key=self._age):  # escalated: their topics come next
            t = self._topics.get(cid)
            if t is None or t.escalated_until <= now:
                self._escalated.discard(cid)
                continue
            if await self._serve_topic(t):
                return True
            if t.card_message_id is not None and t.topic_cursor >= t.seen_cursor:
                self._escalated.discard(cid)
        if await self._card_step():
            return True
        for cid in sorted(self._gap, key=lambda c: self._topics[c].topic_cursor if c in self._topics else 0):
            t = self._topics.get(cid)
            if t is None or t.topic_cursor >= t.seen_cursor:
                self._gap.discard(cid)
                continue
            if await self._serve_topic(t):
                return True
        return False

    def _surge(self) -> bool:
        """More conversations are waiting than the group's budget serves one topic each."""
        waiting = sum(1 for q in self._pending.values() if q)
        return waiting > self.options.digest_threshold

    def _age(self, cid: str) -> int:
        q = self._pending.get(cid)
        if q:
            return q[0].id
        t = self._topics.get(cid)
        return t.topic_cursor if t else 0

    # -- topics -----------------------------------------------------------------------------------
    def _lost_topic(self, t: Topic) -> None:
        log.info("agents: topic %s of %s is gone; it will be recreated", t.thread_id, t.conversation_id)
        if t.thread_id is not None:
            self._by_thread.pop(t.thread_id, None)
        t.thread_id = None
        t.card_message_id = None
        t.card_pinned = False
        t.card_html = ""
        t.card_dirty = True
        self._card_work.discard(t.conversation_id)

    def _name_for(self, t: Topic) -> str:
        return topic_name(t.user_name, t.ref, self._symptom_title(t.symptom), self.texts)

    async def _create_topic(self, t: Topic, urgent: bool) -> None:
        assert self.gateway is not None
        gw = self.gateway
        if not t.user_name:
            state = await self.rstore.load_state(t.conversation_id)
            t.user_name = state.user_name if state else ""
        name = self._name_for(t)
        thread = await self._call(urgent, lambda: gw.create_topic(name))
        t.thread_id = thread
        t.topic_name = name
        t.name_dirty = False
        t.card_message_id = None
        t.card_pinned = False
        t.card_html = ""
        self._by_thread[thread] = t.conversation_id
        await self.reg.save(t)
        self._mark_card(t)

    async def _serve_topic(self, t: Topic) -> bool:
        """The next call for one conversation's topic: create it, post its card, then lines."""
        assert self.gateway is not None
        gw = self.gateway
        if t.conversation_id not in self._topics:
            return False
        if t.thread_id is None:
            await self._create_topic(t, urgent=False)
            return True
        thread = t.thread_id
        if t.card_message_id is None:
            html = await self._card_html(t)
            try:
                sent = await self._call(False, lambda: gw.send(thread, html))
            except ThreadNotFound:
                self._lost_topic(t)
                await self.reg.save(t)
                return True
            t.card_message_id = sent.message_id
            t.card_html = html
            t.card_dirty = False
            await self.reg.save(t)
            return True
        batch = await self._topic_batch(t)
        if batch is None:
            return False
        html, last_id, count = batch
        if html:
            try:
                await self._call(False, lambda: gw.send(thread, html))
            except ThreadNotFound:
                self._lost_topic(t)
                await self.reg.save(t)
                return True
            self.posted_lines += count
        t.topic_cursor = max(t.topic_cursor, last_id)
        t.seen_cursor = max(t.seen_cursor, last_id)
        self._consume(t.conversation_id, last_id)
        if t.topic_cursor >= t.seen_cursor:
            self._gap.discard(t.conversation_id)
        await self.reg.save(t)
        await self._advance_feed()
        return bool(html)

    async def _topic_batch(self, t: Topic) -> tuple[str, int, int] | None:
        """Lines not yet in this topic (earlier ones first), packed into one message."""
        limit = 400
        rows: list[Line] = []
        if t.topic_cursor < t.seen_cursor:
            rows = await self.reg.conversation_rows(t.conversation_id, t.topic_cursor, t.seen_cursor, limit)
        if len(rows) < limit:
            rows += [r for r in self._pending.get(t.conversation_id, ()) if r.id > max(t.topic_cursor, t.seen_cursor)]
        if not rows:
            return None
        items: list[tuple[int, Html]] = []
        for r in rows:
            if r.direction == "agent":  # the agent's own message is already in the topic
                continue
            items.append((r.id, fit(render_line(r, self.texts, out_limit=self.options.topic_out_limit))))
        if not items:
            return "", rows[-1].id, 0
        n = pack([h for _, h in items])
        last_id = rows[-1].id if n == len(items) else items[n - 1][0]
        html = join(h for _, h in items[:n]).html
        return html, last_id, n

    def _consume(self, cid: str, upto: int) -> None:
        q = self._pending.get(cid)
        while q and q[0].id <= upto:
            q.popleft()
            self._pending_rows -= 1
        if q is not None and not q:
            del self._pending[cid]

    # -- the Live feed (busy times) ---------------------------------------------------------------
    def _who(self, t: Topic) -> Html:
        name = f"{display_name(t.user_name, self.texts)} #{t.ref}"
        if t.thread_id is not None and self.chat_id is not None:
            return link(name, topic_link(self.chat_id, t.thread_id))
        return Html.text(f"{name} /open_{t.ref}")

    async def _post_digest(self, cids: list[str]) -> bool:
        assert self.gateway is not None
        gw = self.gateway
        # oldest first across conversations; lazily, so a long backlog costs no more than a message
        rows = heapq.merge(*(self._pending[c] for c in cids if self._pending.get(c)), key=lambda r: r.id)
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
            t = self._topics.get(cid)
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
                cost += self._who(t).visible + 4
            if used + cost > MAX_VISIBLE and used:
                stopped.add(cid)
                if len(stopped) > 20 or used > MAX_VISIBLE - 60:
                    break
                continue
            if cid not in blocks:
                blocks[cid] = [Html("<b>", 0) + self._who(t) + Html("</b>", 0)]
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
        thread = self._live_thread
        if thread is None:
            name = self.texts.plain("agents.desk.topic_live")
            thread = await self._call(False, lambda: gw.create_topic(name))
            self._live_thread = thread
            await self.reg.set_meta("live_thread", thread)
            return True
        html = join((join(lines) for lines in blocks.values()), Html("\n\n", 2)).html
        try:
            await self._call(False, lambda: gw.send(thread, html))
        except ThreadNotFound:
            self._live_thread = None
            await self.reg.set_meta("live_thread", None)
            return True
        for cid, upto in last.items():
            t = self._topics.get(cid)
            if t is None:
                continue
            self.posted_lines += counted.get(cid, 0)
            t.seen_cursor = max(t.seen_cursor, upto)
            self._consume(cid, upto)
            if t.topic_cursor < t.seen_cursor:
                self._gap.add(cid)
        self._seen_dirty.update(c for c in last if c in self._topics)
        await self._save_seen()
        await self._advance_feed()
        return True

    # -- escalations ------------------------------------------------------------------------------
    async def _escalations_thread(self, urgent: bool) -> int:
        assert self.gateway is not None
        gw = self.gateway
        if self._esc_thread is None:
            name = self.texts.plain("agents.desk.topic_escalations")
            thread = await self._call(urgent, lambda: gw.create_topic(name))
            self._esc_thread = thread
            await self.reg.set_meta("escalations_thread", thread)
        return self._esc_thread

    async def _send_or_forget_thread(self, thread: int, html: str, which: str) -> None:
        assert self.gateway is not None
        try:
            await self.gateway.send(thread, html)
        except ThreadNotFound:
            if which == "escalations":
                self._esc_thread = None
                await self.reg.set_meta("escalations_thread", None)
            raise

    async def _post_escalations(self) -> bool:
        assert self.gateway is not None
        gw = self.gateway
        if self._esc_thread is None:
            await self._escalations_thread(urgent=False)
            return True
        lines: list[Html] = []
        taken = 0
        for r in self._esc_pending:
            t = self._topics.get(r.conversation_id)
            if t is None:  # forgotten meanwhile
                taken += 1
                continue
            if t.thread_id is None and not self._surge():
                # the list links to the user's topic: create it first (in a rush, when every
                # call counts, the line offers /open_N instead and the topic comes later)
                if lines:
                    break
                await self._create_topic(t, urgent=False)
                return True
            event = r.kind.partition(":")[2]
            line = self.texts("agents.desk.escalation_line", flag=flag_label(event, self.texts), who=self._who(t))
            if sum(x.visible + 1 for x in lines) + line.visible > MAX_VISIBLE:
                break
            lines.append(line)
            taken += 1
        done = self._esc_pending[:taken]
        if lines:
            thread = self._esc_thread
            try:
                await self._call(False, lambda: gw.send(thread, join(lines).html))
            except ThreadNotFound:
                self._esc_thread = None
                await self.reg.set_meta("escalations_thread", None)
                return True
        self._esc_pending = self._esc_pending[taken:]
        if done:
            self._esc_cursor = max(self._esc_cursor, max(r.id for r in done))
            await self.reg.set_meta("esc_cursor", self._esc_cursor)
        return bool(lines)

    # -- case cards -------------------------------------------------------------------------------
    async def _card_step(self) -> bool:
        assert self.gateway is not None
        gw = self.gateway
        for cid in list(self._card_work):
            t = self._topics.get(cid)
            if t is None or t.thread_id is None:
                self._card_work.discard(cid)
                continue
            thread = t.thread_id
            if t.card_message_id is None:
                return await self._serve_topic(t)
            message_id = t.card_message_id
            if t.card_dirty:
                html = await self._card_html(t)
                t.card_dirty = False
                if html != t.card_html:
                    try:
                        await self._call(False, lambda m=message_id, h=html: gw.edit(m, h))
                        t.card_html = html
                    except NotModified:
                        t.card_html = html
                    except MessageGone:
                        t.card_message_id = None
                        t.card_pinned = False
                    except ThreadNotFound:
                        self._lost_topic(t)
                    await self.reg.save(t)
                    return True
            if not t.card_pinned:
                try:
                    await self._call(False, lambda m=message_id: gw.pin(m))
                    t.card_pinned = True
                except MessageGone:
                    t.card_message_id = None
                except ThreadNotFound:
                    self._lost_topic(t)
                await self.reg.save(t)
                return True
            if t.name_dirty:
                name = self._name_for(t)
                t.name_dirty = False
                if name != t.topic_name:
                    try:
                        await self._call(False, lambda th=thread, n=name: gw.rename_topic(th, n))
                        t.topic_name = name
                    except NotModified:
                        t.topic_name = name
                    except ThreadNotFound:
                        self._lost_topic(t)
                    await self.reg.save(t)
                    return True
            if not (t.card_dirty or t.name_dirty or not t.card_pinned or t.card_message_id is None):
                self._card_work.discard(cid)
        return False

    async def _card_html(self, t: Topic) -> str:
        state = await self.rstore.load_state(t.conversation_id)
        rows = await self.reg.conversation_rows(t.conversation_id, 0, None, 5000)
        values = dict(state.values) if state else {}
        said = values.get("trigger_text", "")
        if not said:
            said = next((r.text for r in rows if r.direction == "in" and r.kind == "text"), "")
        quote = await self._quote_state(t.conversation_id) or t.quote_state
        card = CardData(
            ref=t.ref,
            conversation_id=t.conversation_id,
            user_name=(state.user_name if state and state.user_name else t.user_name),
            symptom_title=self._symptom_title(t.symptom),
            said=said,
            step_ref=state.ref if state else "",
            paused_by=t.paused_by,
            paused_until=t.paused_until,
            blocked=bool(state is not None and not state.active),
            flags=tuple(t.flag_list),
            steps=tuple(self._steps_tried(rows, values)),
            values=values,
            quote_state=quote,
            messages=len(rows),
            since=rows[0].ts if rows else None,
        )
        return render_card(card, self.texts).html

    def _steps_tried(self, rows: list[Line], values: dict[str, str]) -> list[tuple[str, bool]]:
        flows, content = self.engine.flows, self.engine.content
        yes_words, no_words = (
            set(content.words("engine.yes_words")),
            set(content.words("engine.no_words")),
        )
        out: list[tuple[str, bool]] = []
        for r in rows:
            if r.direction != "in" or r.kind not in ("button", "text") or not r.flow:
                continue
            ref = f"{r.flow}.{r.step}"
            if not flows.has(ref):
                continue
            step = flows.step(ref)
            labels = {b.id: content.raw(b.label) for b in step.buttons if b.id in ("yes", "no")}
            if len(labels) != 2:
                continue
            typed = " ".join(r.text.lower().replace("'", "").replace("’", "").split())
            if r.text == labels["yes"] or typed in yes_words:
                fixed = True
            elif r.text == labels["no"] or typed in no_words:
                fixed = False
            else:
                continue
            what = ""
            if step.say:
                try:
                    what = one_line(content.text(step.say[-1], values))
                except (KeyError, ValueError, IndexError):
                    what = step.say[-1]
            out.append((clip(what or ref, 70), fixed))
        return out

    async def _quote_state(self, cid: str) -> str:
        try:
            async with self.db.execute(
                "SELECT o.status FROM quotes q JOIN outbox o ON o.ref = q.ref WHERE q.conversation_id = ? "
                "AND q.created_at = (SELECT MAX(created_at) FROM quotes WHERE conversation_id = ?)",
                (cid, cid),
            ) as cur:
                statuses = [str(r[0]) for r in await cur.fetchall()]
        except Exception:  # no quote tables in this database
            return ""
        if not statuses:
            return ""
        if "failed" in statuses:
            return "failed"
        if all(s == "delivered" for s in statuses):
            return "delivered"
        return "sent"

    # -- agents' input ----------------------------------------------------------------------------
    async def _agent_worker(self) -> None:
        while True:
            item = await self.agent_inbox.get()
            self._agent_busy = 1
            try:
                if isinstance(item, AgentMessage):
                    if item.edited:
                        await self._on_agent_edit(item)
                    else:
                        await self._on_agent_message(item)
                elif isinstance(item, AgentCommand):
                    await self._on_command(item)
                elif isinstance(item, AgentCallback):
                    await self._on_callback(item)
            except Exception:
                self.errors += 1
                log.exception("agents: handling %s failed", type(item).__name__)
            finally:
                self._agent_busy = 0
                self.agent_inbox.task_done()
                self._new_rows()
                self._tick()

    def _head(self, agent: str) -> Html:
        return Html("<b>", 0) + self.texts("agents.from_person", name=agent or "?") + Html("</b>", 0)

    def _relay_html(self, m: AgentMessage, limit: int) -> str:
        head = self._head(m.user_name)
        if not m.text:
            return head.html
        if head.visible + 1 + tg_len(m.text) <= limit:
            return head.html + "\n" + m.html
        return (head + NL + Html.text(clip(m.text, max(10, limit - head.visible - 2)))).html

    async def _on_agent_message(self, m: AgentMessage) -> None:
        assert self.gateway is not None
        gw = self.gateway
        if m.thread_id is None or m.chat_id != self.chat_id:
            return
        cid = self._by_thread.get(m.thread_id)
        if cid is None:
            return  # General, Escalations, Live feed: talk among agents
        t = self._topics[cid]
        if await self.reg.relay(m.message_id) is not None:
            return  # the same update again
        uid = privacy.telegram_user_id(cid)
        if uid is None:
            await self._note(cid, self.texts("agents.desk.note_not_telegram", conversation=cid))
            return
        newly = await self._pause(t, m.user_name)
        what = f"[{m.media}] {m.text}".strip() if m.media else m.text
        try:
            if newly:
                await gw.send_to_user(uid, self.texts("agents.joined").html)
            if m.media in NO_CAPTION:  # stickers, locations...: who it is from goes first
                await gw.send_to_user(uid, self._head(m.user_name).html)
                user_msg = await gw.copy_to_user(uid, m.message_id, None)
            elif m.media:
                user_msg = await gw.copy_to_user(uid, m.message_id, self._relay_html(m, MAX_CAPTION))
            else:
                user_msg = await gw.send_to_user(uid, self._relay_html(m, MAX_VISIBLE))
        except UserBlocked:
            await self._blocked(t)
            return
        except GatewayError as exc:
            await self._note(cid, self.texts("agents.desk.note_failed", error=str(exc)[:200]))
            return
        await self.reg.add_relay(m.message_id, cid, user_msg, caption=bool(m.media))
        await self.store.add_entries(
            cid,
            [Entry(Direction.AGENT, f"{m.user_name}: {what}", kind="media" if m.media else "text")],
        )

    async def _blocked(self, t: Topic) -> None:
        await self.store.set_flags(t.conversation_id, active=False)
        await self._note(t.conversation_id, self.texts("agents.desk.note_blocked"))
        self._mark_card(t)

    async def _on_agent_edit(self, m: AgentMessage) -> None:
        assert self.gateway is not None
        gw = self.gateway
        relay = await self.reg.relay(m.message_id)
        if relay is None:
            return
        cid, user_msg, caption = relay
        uid = privacy.telegram_user_id(cid)
        t = self._topics.get(cid)
        if uid is None or t is None:
            return
        what = f"[{m.media}] {m.text}".strip() if m.media else m.text
        corrected = False
        try:
            try:
                await gw.edit_user_message(
                    uid,
                    user_msg,
                    self._relay_html(m, MAX_CAPTION if caption else MAX_VISIBLE),
                    caption,
                )
            except NotModified:
                return
            except UserBlocked:
                raise
            except GatewayError as exc:  # too old to edit, deleted by the user...: send a correction
                log.info(
                    "agents: edit of relayed message %s failed (%s); sending a correction",
                    user_msg,
                    exc,
                )
                head = Html("<b>", 0) + self.texts("agents.correction") + Html("</b>", 0)
                await gw.send_to_user(uid, head.html + "\n" + self._relay_html(m, MAX_VISIBLE - 40))
                corrected = True
        except UserBlocked:
            await self._blocked(t)
            return
        except GatewayError as exc:
            await self._note(cid, self.texts("agents.desk.note_failed", error=str(exc)[:200]))
            return
        await self.store.add_entries(
            cid,
            [
                Entry(
                    Direction.AGENT,
                    f"{m.user_name} (edited): {what}",
                    kind="media" if m.media else "text",
                )
            ],
        )
        if corrected:
            await self._note(
                cid,
                self.texts(
                    "agents.desk.note_edited",
                    how=self.texts.plain("agents.desk.edited_as_correction"),
                ),
            )

    # -- takeover and hand-back -------------------------------------------------------------------------------------
    async def _pause(self, t: Topic, agent: str) -> bool:
        newly = t.paused_until is None
        if newly:
            async with conversation_lock(self.engine, t.conversation_id):
                await self.store.set_flags(t.conversation_id, paused=True)
        t.paused_until = self.clock.now() + self.options.pause_seconds  # each message extends it
        t.paused_by = agent
        await self.reg.save(t)
        self._mark_card(t)
        self._timer_wake.set()
        if newly:
            minutes = str(max(1, round(self.options.pause_seconds / 60)))
            await self._note(
                t.conversation_id,
                self.texts("agents.desk.note_paused", agent=agent or "?", minutes=minutes),
            )
        return newly

    async def resume(self, t: Topic, *, agent: str = "", mode: str = "agent") -> None:
        """Hand a conversation back: unpause, note it, and let the engine speak to the user
        (``mode``: agent = continue where it was, menu = main menu, expired = pause ran out)."""
        cid = t.conversation_id
        async with conversation_lock(self.engine, cid):
            await self.store.set_flags(cid, paused=False)
        t.paused_until = None
        t.paused_by = ""
        await self.reg.save(t)
        self._mark_card(t)
        key = {"menu": "agents.desk.note_handback_menu", "expired": "agents.desk.note_expired"}.get(
            mode, "agents.desk.note_handback_resume"
        )
        minutes = str(max(1, round(self.options.pause_seconds / 60)))
        await self._note(cid, self.texts(key, agent=agent or "?", minutes=minutes))
        replies = await self.engine.handle(Inbound(cid, EventKind.COMMAND, text=RESUME_COMMAND, arg=mode))
        uid = privacy.telegram_user_id(cid)
        if uid is None or not replies or self.gateway is None:
            return
        try:
            await self.gateway.send_replies(uid, replies)
        except UserBlocked:
            await self._blocked(t)
        except GatewayError as exc:
            await self._note(cid, self.texts("agents.desk.note_failed", error=str(exc)[:200]))

    async def _reconcile_pauses(self) -> None:
        """After a restart: a paused conversation gets an expiry; without a group, none stays paused."""
        async with self.store.db.execute("SELECT id FROM conversations WHERE paused = 1") as cur:
            paused = [str(r[0]) for r in await cur.fetchall()]
        for cid in paused:
            if not self.enabled:
                log.warning("agents: %s was paused but there is no agents' group: resuming the bot", cid)
                async with conversation_lock(self.engine, cid):
                    await self.store.set_flags(cid, paused=False)
                continue
            t = await self._ensure(cid)
            if t.paused_until is None:
                t.paused_until = self.clock.now() + self.options.pause_seconds
                await self.reg.save(t)

    # -- timers: pause expiry, retention, quote deliveries ----------------------------------------
    async def _timers(self) -> None:
        next_purge = self.clock.now() + min(600.0, self.options.purge_every)  # not in the start-up rush
        next_quotes = self.clock.now()
        while True:
            try:
                now = self.clock.now()
                if now >= next_purge:
                    next_purge = now + self.options.purge_every
                    await self.purge()
                if self.enabled and now >= next_quotes:
                    next_quotes = now + self.options.quote_poll_every
                    await self._poll_quotes()
                for t in [t for t in self._topics.values() if t.paused_until is not None and t.paused_until <= now]:
                    await self.resume(t, mode="expired")
                pauses = [t.paused_until for t in self._topics.values() if t.paused_until is not None]
                deadline = min([next_purge, next_quotes if self.enabled else math.inf, *pauses])
                self._tick()
                await self._wait(self._timer_wake, max(0.0, deadline - self.clock.now()), self.clock)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.errors += 1
                log.exception("agents' timers failed; continuing")
                await self._wait(self._timer_wake, 5.0, self.clock)

    async def purge(self) -> int:
        n = await privacy.purge_expired(
            self.store.db, self.options.retention_days, now=self.clock.now(), lock=self._tx_lock
        )
        if n and self.enabled:
            alive = {t.conversation_id for t in await self.reg.all_topics()}
            for cid in [c for c in self._topics if c not in alive]:
                self._drop(cid)
            self._trash_dirty = True
            self._wake.set()
        return n

    async def _poll_quotes(self) -> None:
        since = float(await self.reg.meta("quotes_seen_at") or 0.0)
        try:
            async with self.db.execute(
                "SELECT q.conversation_id, o.status, o.updated_at FROM outbox o JOIN quotes q ON q.ref = o.ref "
                "WHERE o.updated_at > ? ORDER BY o.updated_at",
                (since,),
            ) as cur:
                rows = await cur.fetchall()
        except Exception:  # no quote tables
            return
        if not rows:
            return
        for cid, status, _ in rows:
            t = self._topics.get(str(cid))
            if t is not None:
                self._mark_card(t)
            if status == "failed" and since:
                await self._flag(str(cid), t, "quote_failed")
        await self.reg.set_meta("quotes_seen_at", max(float(r[2]) for r in rows))
        self._wake.set()

    # -- commands ---------------------------------------------------------------------------------
    async def is_agent(self, user_id: int) -> bool:
        if user_id in self.admin_ids:
            return True
        if self.gateway is None:
            return False
        cached = self._members.get(user_id)
        now = time.monotonic()
        if cached is not None and now - cached[1] < self.options.member_cache_seconds:
            return cached[0]
        try:
            ok = await self.gateway.is_member(user_id)
        except GatewayError:
            ok = False
        self._members[user_id] = (ok, now)
        return ok

    async def _reply(self, c: AgentCommand | AgentCallback, html: Html) -> None:
        assert self.gateway is not None
        gw = self.gateway
        text = fit(html).html if html.visible > MAX_VISIBLE else html.html
        if isinstance(c, AgentCommand) and c.private:
            try:
                await gw.send_private(c.chat_id, text)
            except GatewayError as exc:
                log.info("agents: answer to %s not sent: %s", c.chat_id, exc)
            return
        thread = c.thread_id
        self._urgent.append(lambda: gw.send(thread, text))
        self._wake.set()

    async def _target(self, c: AgentCommand) -> tuple[str, Topic | None] | None:
        if not c.private and c.thread_id is not None and c.thread_id in self._by_thread:
            cid = self._by_thread[c.thread_id]
            return cid, self._topics.get(cid)
        arg = c.arg.strip().lstrip("#")
        if arg.isdigit() and int(arg) in self._by_ref:
            cid = self._by_ref[int(arg)]
            return cid, self._topics.get(cid)
        if ":" in arg and await reports.conversation(self.db, arg) is not None:
            return arg, self._topics.get(arg)
        return None

    async def _on_command(self, c: AgentCommand) -> None:
        if c.private and not await self.is_agent(c.user_id):
            log.info("agent command /%s from non-agent %s ignored", c.name, c.user_id)
            return  # nothing back: not even "unknown command"
        name = c.name.lower()
        if name.startswith("open_") and name[5:].isdigit():
            await self._cmd_open(c, int(name[5:]))
            return
        handler = {
            "help": self._cmd_help,
            "start": self._cmd_help,
            "done": self._cmd_done,
            "transcript": self._cmd_transcript,
            "stats": self._cmd_stats,
            "unmatched": self._cmd_unmatched,
            "find": self._cmd_find,
            "forget": self._cmd_forget,
        }.get(name)
        if handler is not None:
            await handler(c)

    async def _cmd_help(self, c: AgentCommand) -> None:
        await self._reply(c, self.texts("agents.desk.help"))

    async def _cmd_open(self, c: AgentCommand, ref: int) -> None:
        cid = self._by_ref.get(ref)
        if cid is None:
            await self._reply(c, self.texts("agents.desk.unknown_ref", ref=str(ref)))
            return
        t = self._topics[cid]
        t.watched_until = max(t.watched_until, self.clock.now() + self.options.watch_seconds)
        self._open_now.add(cid)  # served first: topic, card, then everything it missed
        if t.topic_cursor < t.seen_cursor:
            self._gap.add(cid)
        await self._reply(c, self.texts("agents.desk.opened", ref=str(ref)))

    async def _cmd_done(self, c: AgentCommand) -> None:
        target = await self._target(c)
        if target is None or target[1] is None:
            await self._reply(c, self.texts("agents.desk.need_topic"))
            return
        t = target[1]
        if t.paused_until is None:
            await self._reply(c, self.texts("agents.desk.done_not_paused"))
            return
        assert self.gateway is not None
        gw = self.gateway
        html = self.texts("agents.desk.done_prompt", name=display_name(t.user_name, self.texts)).html
        buttons = [
            (self.texts.plain("agents.desk.btn_resume"), f"{CALLBACK_PREFIX}r:{t.ref}"),
            (self.texts.plain("agents.desk.btn_menu"), f"{CALLBACK_PREFIX}m:{t.ref}"),
        ]
        thread = c.thread_id if not c.private else t.thread_id
        if c.private:
            await gw.send_private(c.chat_id, html)  # no buttons in private: use the topic
            return
        self._urgent.append(lambda: gw.send(thread, html, buttons))
        self._wake.set()

    async def _on_callback(self, cb: AgentCallback) -> None:
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
        kind, _, ref_s = data[len(CALLBACK_PREFIX) :].partition(":")
        cid = self._by_ref.get(int(ref_s)) if ref_s.isdigit() else None
        t = self._topics.get(cid) if cid else None
        if t is None or t.paused_until is None:
            with contextlib.suppress(GatewayError):
                await gw.answer_callback(cb.callback_id, self.texts.plain("agents.desk.done_not_paused"))
            return
        mode = "menu" if kind == "m" else "agent"
        label = self.texts.plain("agents.desk.btn_menu" if mode == "menu" else "agents.desk.btn_resume")
        with contextlib.suppress(GatewayError):
            await gw.answer_callback(cb.callback_id)
        await self.resume(t, agent=cb.user_name, mode=mode)
        chosen = self.texts("agents.desk.done_chosen", choice=label, agent=cb.user_name or "?").html
        message_id = cb.message_id

        async def edit() -> None:
            with contextlib.suppress(NotModified, MessageGone):
                await gw.edit(message_id, chosen)

        self._urgent.append(edit)
        self._wake.set()

    async def _cmd_transcript(self, c: AgentCommand) -> None:
        assert self.gateway is not None
        gw = self.gateway
        target = await self._target(c)
        if target is None:
            await self._reply(c, self.texts("agents.desk.need_topic"))
            return
        cid, t = target
        info = await reports.conversation(self.db, cid)
        lines = await reports.transcript(self.db, cid)
        data = reports.to_markdown(info, cid, lines).encode("utf-8")
        ref = str(t.ref) if t else cid
        name = display_name(info.user_name if info else "", self.texts)
        caption = self.texts("agents.desk.transcript_caption", name=name, ref=ref, count=str(len(lines))).html
        filename = f"transcript-{ref.replace(':', '-')}.md"
        if c.private:
            try:
                await gw.send_private_document(c.chat_id, filename, data, caption)
            except GatewayError as exc:
                log.info("agents: transcript to %s not sent: %s", c.chat_id, exc)
            return
        thread = c.thread_id
        self._urgent.append(lambda: gw.send_document(thread, filename, data, caption))
        self._wake.set()

    def _flow_title(self, flow: str) -> str:
        return self._symptom_title(flow) or flow

    def _fmt_stats(self, period_key: str, s: reports.Stats) -> Html:
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
                    top=", ".join(f"{self._flow_title(f)} ({n})" for f, n in s.top),
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

    async def _cmd_stats(self, c: AgentCommand) -> None:
        now = self.clock.now()
        today = await reports.stats(self.db, reports.start_of_day(now))
        week = await reports.stats(self.db, now - 7 * 86400)
        await self._reply(
            c,
            join(
                [
                    self._fmt_stats("agents.desk.stats_today", today),
                    self._fmt_stats("agents.desk.stats_week", week),
                ],
                Html("\n\n", 2),
            ),
        )

    async def _cmd_unmatched(self, c: AgentCommand) -> None:
        items = await reports.unmatched(self.db, 15)
        if not items:
            await self._reply(
                c,
                self.texts("agents.desk.unmatched_header") + NL + self.texts("agents.desk.unmatched_none"),
            )
            return
        rows = [self.texts("agents.desk.unmatched_header")]
        for u in items:
            cands = ", ".join(f"{i} {s:.0f}" for i, s in u.candidates[:3]) or "-"
            rows.append(Html.text(f"• “{clip(one_line(u.text), 150)}” — {u.decision}: {cands}"))
        await self._reply(c, join(rows[: 1 + pack(rows[1:], MAX_VISIBLE - rows[0].visible - 1)]))
        if not c.private and self.gateway is not None:  # label them: one message each, with buttons
            gw, thread = self.gateway, c.thread_id
            for html, buttons in await labelling.offers(self.store, self.texts):
                self._urgent.append(lambda h=html, b=buttons: gw.send(thread, h, b))
            self._wake.set()

    async def _cmd_find(self, c: AgentCommand) -> None:
        query = c.arg.strip()
        if not query:
            await self._reply(c, self.texts("agents.desk.find_usage"))
            return
        hits = await reports.find(self.db, query, 15)
        if not hits:
            await self._reply(c, self.texts("agents.desk.find_none", query=clip(query, 60)))
            return
        rows = [self.texts("agents.desk.find_header", count=str(len(hits)), query=clip(query, 60))]
        for h in hits:
            t = self._topics.get(h.line.conversation_id)
            who = self._who(t) if t else Html.text(f"{display_name(h.user_name, self.texts)} {h.line.conversation_id}")
            rows.append(
                Html.text("• ")
                + who
                + Html.text(f" · {day_time(h.line.ts)} · ")
                + render_line(h.line, self.texts, out_limit=120, in_limit=160)
            )
        await self._reply(c, join(rows[: 1 + pack(rows[1:], MAX_VISIBLE - rows[0].visible - 1)]))

    async def _cmd_forget(self, c: AgentCommand) -> None:
        target = await self._target(c)
        if target is None:
            await self._reply(c, self.texts("agents.desk.need_topic"))
            return
        cid, t = target
        ref = str(t.ref) if t else cid
        await self.forget(cid)
        uid = privacy.telegram_user_id(cid)
        if uid is not None and self.gateway is not None:
            try:
                await self.gateway.send_to_user(uid, self.texts("agents.forgotten_by_agent").html)
            except GatewayError as exc:
                log.info("agents: could not tell %s about the deletion: %s", cid, exc)
        note = self.texts("agents.desk.note_forgotten", agent=c.user_name or "?", ref=ref)
        if c.private:
            await self._reply(c, note)
            return
        assert self.gateway is not None
        gw = self.gateway
        self._urgent.append(lambda: gw.send(None, note.html))
        self._wake.set()

    async def forget(self, conversation_id: str) -> None:
        """Erase one conversation everywhere (database, its topic) — an agent's /forget."""
        privacy.notify_forgetting(conversation_id)
        try:
            async with conversation_lock(self.engine, conversation_id):
                await privacy.forget_conversation(self.store.db, conversation_id, lock=self._tx_lock)
        finally:
            privacy.notify_forgotten(conversation_id, await self.reg.max_message_id())


def _unhtml(h: Html) -> str:
    import html as _html
    import re

    return _html.unescape(re.sub(r"<[^>]+>", "", h.html))
