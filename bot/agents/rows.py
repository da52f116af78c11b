"""The rows of the desk's tables as the desk holds them: ``Topic`` (``agent_topics``: one
conversation's forum topic, card, cursors, owner — mutable, cached in the desk's state),
``QueueItem`` (``agent_queue``) and ``Post`` (``agent_posts``). The SQL is in ``registry``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TOPIC_COLUMNS = (
    "ref",
    "conversation_id",
    "thread_id",
    "topic_name",
    "card_message_id",
    "card_pinned",
    "card_html",
    "topic_cursor",
    "seen_cursor",
    "symptom",
    "flags",
    "paused_until",
    "paused_by",
    "quote_state",
    "created_at",
    "updated_at",
    "owner_id",
    "owner_name",
)


@dataclass
class Topic:
    """One conversation as the desk sees it (mutable cache of an ``agent_topics`` row)."""

    ref: int
    conversation_id: str
    thread_id: int | None = None
    topic_name: str = ""
    card_message_id: int | None = None
    card_pinned: bool = False
    card_html: str = ""
    topic_cursor: int = 0
    seen_cursor: int = 0
    symptom: str = ""  # flow id of the problem the user is being helped with
    flags: str = ""  # comma-separated escalation events seen (for the card and the name)
    paused_until: float | None = None
    paused_by: str = ""
    quote_state: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0
    owner_id: int = 0  # the agent who owns the case (0: nobody)
    owner_name: str = ""
    # in memory only
    user_name: str = field(default="", compare=False)
    card_dirty: bool = field(default=True, compare=False)
    name_dirty: bool = field(default=False, compare=False)
    watched_until: float = field(default=0.0, compare=False)  # an agent opened it: served first
    escalated_until: float = field(default=0.0, compare=False)  # topic set up before others
    last_flags_at: dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def flag_list(self) -> list[str]:
        return [f for f in self.flags.split(",") if f]

    def add_flag(self, flag: str) -> bool:
        flags = self.flag_list
        if flag in flags:
            return False
        flags.append(flag)
        self.flags = ",".join(flags)
        return True

    @property
    def paused(self) -> bool:
        return self.paused_until is not None


def topic_from_row(row: Any) -> Topic:
    return Topic(
        ref=row[0],
        conversation_id=row[1],
        thread_id=row[2],
        topic_name=row[3],
        card_message_id=row[4],
        card_pinned=bool(row[5]),
        card_html=row[6],
        topic_cursor=row[7],
        seen_cursor=row[8],
        symptom=row[9],
        flags=row[10],
        paused_until=row[11],
        paused_by=row[12],
        quote_state=row[13],
        created_at=row[14],
        updated_at=row[15],
        owner_id=int(row[16] or 0),
        owner_name=row[17] or "",
    )


QUEUE_COLUMNS = (
    "id, conversation_id, kind, status, agent, message_id, opened_at, claimed_at, resolved_at, alerted_at"
)


@dataclass(frozen=True)
class QueueItem:
    """One escalation of one conversation: open -> claimed (by an agent) -> resolved."""

    id: int
    conversation_id: str
    kind: str  # human_requested, quote_sent, data_at_risk, not_understood_twice, still_broken,
    # quote_failed, waiting (a message unanswered during a takeover), takeover
    status: str  # open | claimed | resolved
    agent: str
    message_id: int | None  # its line in the Escalations topic (with the buttons)
    opened_at: float
    claimed_at: float | None
    resolved_at: float | None
    alerted_at: float | None


@dataclass(frozen=True)
class Post:
    """A recorded message the desk posted (``agent_posts``) that needs cleaning up:
    ``cleanup`` 1 = a conversation in it was erased, 2 = expired (delete it whole)."""

    id: int
    private_chat: int | None
    thread_id: int | None
    message_id: int
    kind: str
    editable: bool
    cleanup: int
