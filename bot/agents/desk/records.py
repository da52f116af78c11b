"""What the desk is configured with and what agents do, as plain records: the options
(``DeskOptions``), the texts it needs (``REQUIRED_KEYS``), the agents' messages, commands and
button presses (filled in by ``bot.tg.agents_gateway``), and the engine's per-conversation lock.
"""


from __future__ import annotations

import asyncio
import html as _html
import logging
import re
from dataclasses import dataclass
from typing import Any, TypeVar

from bot.core.engine import Engine
from bot.core.errors import Problem

from ..commands import HANDBACK_COMMAND
from ..hours import BusinessHours
from ..render import (
    Html,
)

log = logging.getLogger(__name__)


T = TypeVar("T")

# Commands only agents may use. In a private chat anyone else gets no answer at all.
AGENT_ONLY_COMMANDS = frozenset(
    {"done", "transcript", "stats", "unmatched", "find", "queue", "note", "assign", "release"}
)
NOTE_PREFIX = "//"  # a line an agent starts with this stays in the group (like /note)
NOTE_KIND = "agent_note"  # transcript kind of an agent's internal note (never sent to the user)
# Events listed in the Escalations topic; other flags only mark the user's topic and card.
ESCALATIONS = (
    "human_requested",
    "still_broken",
    "not_understood_twice",
    "quote_sent",
    "quote_failed",
    "data_at_risk",
    "waiting",
)
# Escalations that become items of the queue (bot/agents/desk/queue.py)
QUEUE_KINDS = frozenset(ESCALATIONS) - {"waiting"}
NOT_SYMPTOMS = frozenset({"main_menu", "common", "human_agent", "quote"})
NO_CAPTION = frozenset({"sticker", "video_note", "location", "venue", "contact", "dice", "poll"})
MAX_PENDING = 1500  # transcript rows the mirror holds in memory (the rest waits in SQLite)
RESUME_COMMAND = HANDBACK_COMMAND  # the engine command that hands a conversation back
CALLBACK_PREFIX = "ag:"
FORGET_CHOICES = ("fu", "ft", "fx")  # /forget confirmed: the user asked / the team decided / cancelled
CASE_ARG = re.compile(r"#?(\d{1,9})")  # how /forget names a case outside its topic: #N

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
    "agents.desk.note_user_forgot",
    "agents.desk.forget_refused",
    "agents.desk.forget_usage",
    "agents.desk.forget_confirm",
    "agents.desk.btn_forget_asked",
    "agents.desk.btn_forget_team",
    "agents.desk.btn_forget_cancel",
    "agents.desk.forget_cancelled",
    "agents.desk.post_erased",
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
    "agents.desk.note_line",
    "agents.desk.note_usage",
    "agents.desk.card_notes",
    "agents.desk.card_owner",
    "agents.desk.card_no_owner",
    "agents.desk.card_quote_case",
    "agents.desk.btn_claim_case",
    "agents.desk.note_claimed",
    "agents.desk.note_assigned",
    "agents.desk.note_released",
    "agents.desk.assign_usage",
    "agents.desk.assign_unknown",
    "agents.desk.release_none",
    "agents.desk.owned_prompt",
    "agents.desk.btn_reply_anyway",
    "agents.desk.btn_take_over",
    "agents.desk.confirm_prompt",
    "agents.desk.btn_send_pause",
    "agents.desk.btn_keep_note",
    "agents.desk.held_gone",
    "agents.desk.held_not_yours",
    "agents.desk.held_sent",
    "agents.desk.held_noted",
    "agents.desk.already_owned",
    *(f"agents.desk.flag.{e}" for e in (*ESCALATIONS, "risky_topic")),
    # the queue, waiting alerts, business hours, satisfaction (content/en/agents_queue.yaml)
    "agents.pause_expired_waiting",
    "agents.reply_soon",
    "agents.reply_at",
    "agents.desk.waiting_alert",
    "agents.desk.waiting_requeued",
    "agents.desk.queue_header",
    "agents.desk.queue_none",
    "agents.desk.queue_line",
    "agents.desk.queue_open",
    "agents.desk.queue_claimed",
    "agents.desk.queue_resolved",
    "agents.desk.btn_claim",
    "agents.desk.btn_resolve",
    "agents.desk.queue_taken",
    "agents.desk.queue_gone",
    "agents.desk.queue_done_toast",
    "agents.desk.kind.takeover",
    "agents.desk.kind.waiting",
    "agents.desk.card_rating",
    "agents.desk.stats_weeks",
    "agents.desk.stats_steps",
    "agents.desk.stats_flows",
    "agents.desk.stats_agents",
    "agents.desk.stats_ratings",
    "agents.desk.stats_none",
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
    # several processes on one database (``bot.agents.feature``): the leader's writer also looks
    # this often for lines and deletions other processes stored; a follower's desk only records
    # its turns' escalations (no group, no timers, no purge)
    look_every: float | None = None
    record_only: bool = False
    forget_by_group_admins: bool = False  # FORGET_BY_GROUP_ADMINS: group administrators may erase too
    quote_retention_days: int = 365  # QUOTE_RETENTION_DAYS
    wait_alert_seconds: float = 5 * 60.0  # AGENT_WAIT_ALERT_MINUTES: unanswered during a takeover
    hours: BusinessHours = BusinessHours()  # BUSINESS_HOURS, BUSINESS_TZ (default: always open)


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
    username: str = ""  # the agent's @username without the @ ("" if none)


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
    username: str = ""


@dataclass(frozen=True)
class AgentCallback:
    callback_id: str
    chat_id: int
    message_id: int
    thread_id: int | None
    user_id: int
    user_name: str
    data: str


@dataclass(frozen=True)
class UserMedia:
    """A user sent a photo, document, voice... in their private chat (seen by the Telegram
    door before the engine): the desk copies it into their topic (``copyMessage``) where the
    transcript has its ``[photo] caption`` line."""

    conversation_id: str
    chat_id: int
    message_id: int
    kind: str
    ts: float


def conversation_lock(engine: Engine, conversation_id: str) -> asyncio.Lock:
    """The engine's own per-conversation lock: flipping ``paused`` under it means no turn can
    load the old value and save it back over ours."""
    return engine.lock_for(conversation_id)




def unhtml(h: Html) -> str:
    return _html.unescape(re.sub(r"<[^>]+>", "", h.html))
