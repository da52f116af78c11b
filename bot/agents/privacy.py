"""Erasing a user's data (/forget) and the retention purge: what is erased, and when.

The SQL lives in store classes: ``bot.store.erasure.Erasure`` (generic over the schema, so
tables added by later features are covered without edits here) and the agents' ``Registry``
(their topics and posted messages). Deleted content is zeroed, free pages go back to the file
system and the WAL is truncated, so the text is not left in the file either (SQLite; on
PostgreSQL the rows are gone from every query at once, autovacuum reuses their space).
``db`` is the store's ``db``: the aiosqlite connection on SQLite, the ``PostgresDatabase``.

Forum topics and the desk's other posts about a user are not deleted on Telegram here: their
thread ids go to ``agent_trash`` and their posts are marked in ``agent_posts``; the desk
deletes (or edits) them (it owns the group's rate limit). Who must be told around a deletion
(the desk) is told by the caller (``feature.Agents.forgetting`` / ``forgotten``).

Retention (``purge_expired``):

* transcript lines (``messages``, ``unmatched``) older than ``RETENTION_DAYS`` are deleted,
  in slices; a conversation idle that long is erased like /forget — except its quote
  requests, which have their own period (``QUOTE_RETENTION_DAYS``: the lab may need them
  longer) and are deleted when it has passed, whatever the conversation;
* a conversation still active keeps its state, but the values that quote the user's words
  (``WORDS_VALUES``: the first words, a message waiting, form answers) go when the line they
  were typed in has expired, and its case card is drawn again without them;
* the desk's posts about users older than ``RETENTION_DAYS`` are deleted on Telegram.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import aiosqlite

from bot.store.database import Database
from bot.store.erasure import Erasure

from .registry import Registry

log = logging.getLogger(__name__)

_OWN = ("agent_trash", "agent_meta", "agent_posts", "sqlite_sequence")
# Kept by their own retention (QUOTE_RETENTION_DAYS), not the conversation's: the quote
# feature's requests (their outbox rows and photos hang off them by foreign key).
QUOTES = ("quotes", "created_at")
# State values that hold the user's own words: kept only while the line they came from is.
WORDS_VALUES = (
    "trigger_text",
    "pending_text",
    "q_name",
    "q_email",
    "q_phone",
    "q_device",
    "q_damage",
    "q_data",
    "q_description",
    "q_backup",
)


def telegram_user_id(conversation_id: str) -> int | None:
    prefix, _, rest = conversation_id.partition(":")
    if prefix == "tg" and rest.lstrip("-").isdigit():
        return int(rest)
    return None


class _NoLock:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


async def forget_conversation(
    db: aiosqlite.Connection | Database,
    conversation_id: str,
    *,
    scrub: bool = True,
    lock: Any = None,
    keep_quotes: bool = False,
) -> int:
    """Delete everything stored about one conversation, in one transaction. Returns the number
    of rows deleted. ``lock``: the store's ``tx_lock`` when ``db`` is the bot's shared
    connection. Its forum topic goes to ``agent_trash``, the desk's posts about it are marked
    for clean-up. ``keep_quotes``: the retention purge (quotes have their own period)."""
    erasure = Erasure(db)
    async with lock if lock is not None else _NoLock():
        tables = await erasure.tables()
        skip: tuple[str, ...] = _OWN + ((QUOTES[0],) if keep_quotes else ())
        async with erasure.transaction() as tx:
            if "agent_topics" in tables:
                reg = Registry(tx)  # its writes go into the erasure's transaction
                thread = await reg.trash_topic_of(conversation_id)
                if "agent_posts" in tables:
                    await reg.mark_posts_of(conversation_id, thread)
            deleted = await erasure.delete_conversation(conversation_id, telegram_user_id(conversation_id), skip=skip)
        if scrub:  # the deleted text must not linger in free pages or the write-ahead log
            await erasure.reclaim()
    log.info("forgot conversation %s (%d rows)", conversation_id, deleted)
    return deleted


@dataclass(frozen=True)
class Purged:
    conversations: int  # idle conversations erased
    pruned: tuple[str, ...]  # active conversations whose state lost expired words (cards to redraw)
    quotes: int  # quote requests past QUOTE_RETENTION_DAYS


async def purge_expired(
    db: aiosqlite.Connection | Database,
    retention_days: int,
    now: float | None = None,
    lock: Any = None,
    quote_retention_days: int | None = None,
) -> int:
    """``purge`` without the details: the number of idle conversations erased."""
    done = await purge(db, retention_days, now=now, lock=lock, quote_retention_days=quote_retention_days)
    return done.conversations


async def purge(
    db: aiosqlite.Connection | Database,
    retention_days: int,
    *,
    now: float | None = None,
    lock: Any = None,
    quote_retention_days: int | None = None,
) -> Purged:
    """The retention purge (module docstring). ``quote_retention_days`` None: the same period
    as the transcripts."""
    lock = lock if lock is not None else _NoLock()
    now = now if now is not None else time.time()
    cutoff = now - retention_days * 86400.0
    quote_cutoff = now - (quote_retention_days if quote_retention_days is not None else retention_days) * 86400.0
    erasure = Erasure(db)
    tables = await erasure.tables()
    stale = await erasure.idle_conversations(cutoff) if "conversations" in tables else []
    aging = await erasure.conversations_with_lines_before(cutoff) if "messages" in tables else []
    for table in ("messages", "unmatched"):
        while True:  # in slices, the lock released in between: users' turns go first
            async with lock:
                n = await erasure.delete_before(table, "ts", cutoff)
            if n < 500:
                break
    quotes = 0
    while True:
        async with lock:
            n = await erasure.delete_before(*QUOTES, quote_cutoff)
        quotes += n
        if n < 500:
            break
    for cid in stale:
        await forget_conversation(db, cid, scrub=False, lock=lock, keep_quotes=True)
    gone = set(stale)
    pruned: list[str] = []
    for cid in aging:
        if cid in gone:
            continue
        async with lock:
            if await erasure.prune_words(cid, WORDS_VALUES) and "agent_topics" in tables:
                await Registry(db).forget_card(cid)
                pruned.append(cid)
    if "agent_posts" in tables:
        async with lock:
            await Registry(db).expire_posts(cutoff)
    async with lock:
        await erasure.reclaim()
    if stale or quotes or pruned:
        log.info(
            "retention: %d conversation(s) idle for more than %d days purged, %d quote request(s) "
            "past their period, %d active conversation(s) lost expired words",
            len(stale), retention_days, quotes, len(pruned),
        )
    return Purged(len(stale), tuple(pruned), quotes)


@dataclass(frozen=True)
class StoredSummary:
    messages: int
    first_ts: float | None


async def stored_summary(store: Any, conversation_id: str) -> StoredSummary:
    """What /privacy counts (``store``: the conversation store)."""
    count, first = await store.message_summary(conversation_id)
    return StoredSummary(count, first)
