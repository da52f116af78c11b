"""The agents feature (``bot.runtime.Feature``): the users' /privacy, /forget and /resume, and
the agents' desk — started by ``Runtime.start`` with the agents' group from ``Ports``.

It owns what the feature shares between its parts: the desk (one per runtime, created on
``start``), the /forget second passes still running (``track`` / ``wait_cleanups``), and
who is told around a deletion (the desk, so nothing of a forgotten conversation is posted).
Without an agents' group (``AGENT_CHAT_ID`` unset, or no gateway from the door) the desk
only records escalations and runs the retention purge. ``desk=False``: no desk at all
(tests that need only the commands).

It is also the quote feature's ``Alerter``: an alert goes to the agents' Escalations topic
when there is a group, else to the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bot.config import Settings
from bot.core.actions import ActionContext, ActionFn, ActionResult
from bot.core.engine import CommandFn, Engine
from bot.store import SQLiteStore

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
    def migrations(self) -> Sequence[str]:
        return schema.MIGRATIONS

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

    async def start(self, ports: Ports) -> None:
        if not self.with_desk or self.desk is not None:
            return
        assert self._engine is not None, "bound by open_runtime"
        chat_id = self.settings.agent_chat_id if ports.agents_group is not None else None
        self.desk = AgentDesk(
            self._engine,
            self.store,
            ports.agents_group,
            chat_id=chat_id,
            admin_ids=self.settings.admin_ids,
            options=self.options,
            clock=self.clock,
            limiter=self.limiter,
            quotes=self.quotes,
        )
        await self.desk.start()
        early, self._early_alerts = self._early_alerts, []
        for text in early:
            await self.desk.alert(text)

    async def close(self) -> None:
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
