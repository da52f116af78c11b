"""The desk's working state, in one place: what the mirror holds in memory between calls
into the group (topics by conversation, thread and number; lines waiting per conversation;
cursors; work queues) — the parts read and change it, the durable copy is in the agents'
tables (``registry``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bot.store.conversations import MessageRow

from ..rows import Post, QueueItem, Topic
from .records import AgentMessage, UserMedia


@dataclass
class DeskState:
    # the topic cache
    topics: dict[str, Topic] = field(default_factory=dict)
    by_thread: dict[int, str] = field(default_factory=dict)
    by_ref: dict[int, str] = field(default_factory=dict)
    # fresh transcript lines waiting per conversation (at most MAX_PENDING in all)
    pending: dict[str, deque[MessageRow]] = field(default_factory=dict)
    pending_rows: int = 0
    more: bool = False  # more rows wait in the database than were read
    maybe_new: bool = True  # rows may have been stored since the last read
    fetched: int = 0  # messages.id read up to
    # escalations
    esc_known: int = 0
    esc_pending: list[MessageRow] = field(default_factory=list)
    esc_hint: bool = False
    esc_cursor: int = 0
    esc_thread: int | None = None
    # work queues
    urgent: deque[Callable[[], Awaitable[Any]]] = field(default_factory=deque)  # answers to agents
    card_work: set[str] = field(default_factory=set)
    gap: set[str] = field(default_factory=set)  # topics behind what the Live feed showed
    open_now: set[str] = field(default_factory=set)  # opened by an agent (/open_N)
    escalated: set[str] = field(default_factory=set)
    trash: deque[int] = field(default_factory=deque)  # topics to delete (privacy)
    trash_dirty: bool = True
    clean: deque[Post] = field(default_factory=deque)  # posted messages to delete or edit (privacy)
    erased_at: dict[str, float] = field(default_factory=dict)  # conversation -> when its erasure ended
    recheck: set[str] = field(default_factory=set)  # erased, but a post about it was recorded late
    work_started: float = 0.0  # when the agent task began the command it is answering
    # the Live feed and cursors
    live_thread: int | None = None
    feed_cursor: int = 0
    feed_saved_at: float = 0.0
    start_cursor: int = 0
    seen_dirty: set[str] = field(default_factory=set)
    seen_saved_at: float = 0.0
    # privacy: conversations being (or just) forgotten, and rows up to which they are gone
    forgotten: dict[str, float] = field(default_factory=dict)
    # flags raised recently, agents' membership cache
    flag_times: dict[tuple[str, str], float] = field(default_factory=dict)
    members: dict[int, tuple[bool, float]] = field(default_factory=dict)
    # users' media waiting to be copied into their topic, per conversation, oldest first
    media: dict[str, deque[UserMedia]] = field(default_factory=dict)
    media_done: set[tuple[int, int]] = field(default_factory=set)  # (chat, message) copied or dropped
    # agents' messages waiting for a tap (confirm / owned by someone else), per (conversation, agent)
    held: dict[tuple[str, int], list[AgentMessage]] = field(default_factory=dict)
    # agents seen in the group: user id -> (first name, @username) (for /assign)
    agents_seen: dict[int, tuple[str, str]] = field(default_factory=dict)
    # busy markers (for settle)
    writer_idle: bool = False
    busy: bool = False
    agent_busy: int = 0
    # the queue (queue.py): customers' unanswered messages during a takeover, per conversation;
    # /queue answers (message id -> the items listed, for their buttons)
    waiting: dict[str, QueueItem] = field(default_factory=dict)
    queue_views: dict[int, list[int]] = field(default_factory=dict)
