"""The agents feature (``bot.runtime.Feature``): the users' /privacy, /forget and /resume, and
the agents' desk — started by ``Runtime.start`` with the agents' group from ``Ports``.

It owns what the feature shares between its parts: the desk (one per runtime, created on
``start``), the /forget second passes still running (``track`` / ``wait_cleanups``), and
who is told around a deletion (the desk, so nothing of a forgotten conversation is posted).
Without an agents' group (``AGENT_CHAT_ID`` unset, or no gateway from the door) the desk
only records escalations and runs the retention purge. ``desk=False``: no desk at all
(tests that need only the commands).

Several processes on one database (``Core.leadership``, ``bot.store.leader``): the desk —
the group's only writer, its timers, the retention purge — runs in the leading process only.
It is opened when this process becomes the leader (its state read afresh from the database,
where the previous leader left it; its writer also looks every second for lines the other
processes stored) and closed when it stops leading. A follower's desk only records its users'
escalations (``DeskOptions.record_only``): they reach the group through the database, like
every transcript line. Alerts raised in a follower go to its log. One process (SQLite) always
leads: nothing changes there.

It is also the quote feature's ``Alerter``: an alert goes to the agents' Escalations topic
when there is a group, else to the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bot.config import Settings
from bot.core.actions import ActionContext, ActionFn, ActionResult
from bot.core.engine import CommandFn, Engine
from bot.store import SQLiteStore
from bot.store.leader import Leadership, SoleLeader

from . import schema
from .commands import agent_commands
from .desk import REQUIRED_KEYS, AgentDesk, DeskOptions
from .hours import BusinessHours
from .limiter import GroupLimiter
from .ports import Clock, QuoteStates

if TYPE_CHECKING:
    from bot.runtime import Core, Ports

log = logging.getLogger(__name__)

USER_TEXTS = (
    "agents.privacy_stored",
    "agents.privacy_secrets",
    "agents.privacy_team",
    "agents.privacy_no_team",
    "agents.privacy_kept",
    "agents.privacy_quotes",
    "agents.privacy_forget",
    "agents.privacy_cannot",
    "agents.forgotten",
    "agents.forgotten_on_request",
    "agents.forgotten_by_agent",
    "agents.forget_with_arg",
    "agents.handback_menu",
    "agents.handback_resume",
    "agents.pause_expired",
    "agents.resume",
)


class Agents:
    name = "agents"

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        desk: bool = True,
        options: DeskOptions | None = None,
        clock: Clock | None = None,
        limiter: GroupLimiter | None = None,
        quotes: QuoteStates | None = None,
    ) -> None:
        self.settings = settings or Settings()
        s = self.settings
        self.options = options or DeskOptions(
            pause_seconds=s.pause_minutes * 60.0,
            retention_days=s.retention_days,
            quote_retention_days=s.quote_retention_days,
            forget_by_group_admins=s.forget_by_group_admins,
            wait_alert_seconds=s.wait_alert_minutes * 60.0,
            hours=BusinessHours(s.business_hours, s.business_tz),
        )
        self.with_desk = desk
        self.clock = clock
        self.limiter = limiter
        self.quotes = quotes  # the quote feature, asked for a request's status (the case card)
        self.desk: AgentDesk | None = None
        self._engine: Engine | None = None
        self._store: SQLiteStore | None = None
        self._leadership: Leadership = SoleLeader()
        self._terms: asyncio.Task[None] | None = None  # opens/closes the desk as leadership changes
        self._cleanups: set[asyncio.Task[None]] = set()
        self._early_alerts: list[str] = []  # raised before the desk started: posted when it has

    @property
    def retention_days(self) -> int:
        return self.options.retention_days

    @property
    def store(self) -> SQLiteStore:
        if self._store is None:
            raise RuntimeError("the agents feature is not bound to a runtime (open_runtime binds it)")
        return self._store

    # -- the feature seam -------------------------------------------------------------------------
    def migrations(self) -> Mapping[str, Sequence[str]]:
        return schema.BY_DIALECT

    def actions(self) -> Mapping[str, tuple[ActionFn, tuple[str, ...]]]:
        return {"team_hours": (self._team_hours, ("open", "closed"))}

    async def _team_hours(self, _ctx: ActionContext) -> ActionResult:
        """The human_agent flow: is the team in now (business hours)? If not, ``agent_opens``
        says when it is (the request is queued either way). Replaces the core's "always"."""
        now = self.clock.now() if self.clock is not None else time.time()
        hours = self.options.hours
        if hours.is_open(now):
            return ActionResult("open")
        return ActionResult("closed", set=(("agent_opens", hours.describe_next(now)),))

    def commands(self) -> Mapping[str, CommandFn]:
        return agent_commands(self)

    def required_texts(self) -> Sequence[str]:
        return (*USER_TEXTS, *REQUIRED_KEYS)

    def bind(self, core: Core) -> None:
        self._engine = core.engine
        self._store = core.store
        self._leadership = core.leadership

    async def start(self, ports: Ports) -> None:
        if not self.with_desk or self.desk is not None or self._terms is not None:
            return
        assert self._engine is not None, "bound by open_runtime"
        if isinstance(self._leadership, SoleLeader):
            await self._open_desk(ports, self.options)
        else:
            await self._open_desk(ports, self._options_for(self._leadership.is_leader))
            self._terms = asyncio.ensure_future(self._follow(ports))

    def _options_for(self, leading: bool) -> DeskOptions:
        if leading:
            return dataclasses.replace(self.options, look_every=1.0)
        return dataclasses.replace(self.options, record_only=True)

    def _shares_budget(self, options: DeskOptions) -> bool:
        """A leader of several processes shares the group's budget with the leaders before and
        after it: it stores its calls' times and starts from the previous leader's (the group's
        limit holds across a hand-over, and the new leader continues at once)."""
        return not isinstance(self._leadership, SoleLeader) and not options.record_only

    async def _follow(self, ports: Ports) -> None:
        """The leader's desk while this process leads, a recording one while it follows."""
        lead = self._leadership
        while True:
            leads = self.desk is not None and not self.desk.options.record_only
            await (lead.wait_lost() if leads else lead.wait_leader())
            if lead.is_leader == leads:
                continue
            try:
                desk, self.desk = self.desk, None
                if desk is not None:
                    await desk.close()
                await self._open_desk(ports, self._options_for(lead.is_leader))
            except Exception:  # tried again in a moment (or at the next change of leadership)
                log.exception("agents' desk: changing over after a change of leadership failed")
                await asyncio.sleep(5.0)

    async def _open_desk(self, ports: Ports, options: DeskOptions) -> None:
        assert self._engine is not None, "bound by open_runtime"
        group = None if options.record_only else ports.agents_group
        chat_id = self.settings.agent_chat_id if group is not None else None
        self.desk = AgentDesk(
            self._engine,
            self.store,
            group,
            chat_id=chat_id,
            admin_ids=self.settings.admin_ids,
            options=options,
            clock=self.clock,
            limiter=self.limiter,
            quotes=self.quotes,
        )
        self.desk.ports.shared_budget = self._shares_budget(options)
        await self.desk.start()
        early, self._early_alerts = self._early_alerts, []
        for text in early:
            await self.desk.alert(text)

    async def close(self) -> None:
        terms, self._terms = self._terms, None
        if terms is not None:
            terms.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await terms
        desk, self.desk = self.desk, None
        try:
            if desk is not None:
                await desk.close()
        finally:
            await self.wait_cleanups()

    # -- /forget: the second pass, and who is told ------------------------------------------------
    def track(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def wait_cleanups(self, timeout: float = 5.0) -> None:
        """Wait for pending /forget second passes (tests, shutdown)."""
        if self._cleanups:
            await asyncio.wait_for(asyncio.gather(*list(self._cleanups), return_exceptions=True), timeout)

    def forgetting(self, conversation_id: str) -> None:
        """The user's own /forget is erasing ``conversation_id`` (mid-takeover too)."""
        if self.desk is not None:
            self.desk.forgetting(conversation_id, by_user=True)

    def forgotten(self, conversation_id: str, upto_id: int) -> None:
        if self.desk is not None:
            self.desk.forgotten(conversation_id, upto_id)

    # -- the quote feature's Alerter --------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        """True when the desk posts into an agents' group."""
        return self.desk is not None and self.desk.enabled

    async def alert(self, text: str) -> None:
        if self.desk is not None:
            await self.desk.alert(text)
        elif self.with_desk and self._engine is not None:  # bound, desk not started yet
            self._early_alerts.append(text)
        else:
            log.warning("ALERT: %s", text)
