"""The database seam (bot/store/database.py): transactions, and each feature's own tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.agents import schema as agents_schema
from bot.escalation import Escalation
from bot.escalation import schema as quotes_schema
from bot.features import standard_features
from bot.runtime import Knowledge, open_runtime
from bot.store import SQLiteStore, StoreError
from bot.store import schema as conversation_schema

ROOT = Path(__file__).resolve().parents[1]


async def _tables(store: SQLiteStore) -> set[str]:
    return {str(r[0]) for r in await store.database.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")}


async def test_a_feature_brings_its_own_tables(knowledge: Knowledge, tmp_path: Path) -> None:
    bare = await open_runtime(tmp_path / "bare.db", ROOT / "content", ROOT / "flows", knowledge=knowledge)
    try:
        assert "conversations" in await _tables(bare.store)
        assert not {"quotes", "outbox", "agent_topics"} & await _tables(bare.store)
    finally:
        await bare.close()
    full = await open_runtime(
        tmp_path / "full.db", ROOT / "content", ROOT / "flows", features=standard_features().all, knowledge=knowledge
    )
    try:
        assert {"quotes", "outbox", "attachments", "agent_topics", "agent_relays", "agent_queue"} <= await _tables(
            full.store
        )
        versions = dict(await full.store.database.fetchall("SELECT owner, version FROM schema_versions"))
        assert versions == {"conversations": len(conversation_schema.MIGRATIONS), "quotes": 2,
                            "agents": len(agents_schema.MIGRATIONS)}
    finally:
        await full.close()


async def test_a_database_from_before_the_move_keeps_its_requests(knowledge: Knowledge, tmp_path: Path) -> None:
    """Quote tables made by the conversation store's old step 2 (no schema_versions row):
    the feature's first migration finds them in place and the stored request survives."""
    db = tmp_path / "old.db"
    store = await SQLiteStore.open(db)
    await store.db.executescript(quotes_schema.MIGRATIONS[0])
    await store.db.execute(
        "INSERT INTO quotes (ref, conversation_id, created_at, fields_json) VALUES ('Q-OLD1', 'tg:1', 1, '{}')"
    )
    await store.close()
    runtime = await open_runtime(db, ROOT / "content", ROOT / "flows", features=[Escalation()], knowledge=knowledge)
    try:
        rows = await runtime.store.database.fetchall("SELECT ref FROM quotes")
        assert [r[0] for r in rows] == ["Q-OLD1"]
    finally:
        await runtime.close()


async def test_a_failed_transaction_leaves_nothing(store: SQLiteStore) -> None:
    database = store.database
    await database.execute("CREATE TABLE t (x INTEGER)")
    with pytest.raises(ZeroDivisionError):
        async with database.transaction() as tx:
            await tx.execute("INSERT INTO t VALUES (1)")
            raise ZeroDivisionError
    async with database.transaction() as tx:
        await tx.execute("INSERT INTO t VALUES (2)")
    assert [r[0] for r in await database.fetchall("SELECT x FROM t")] == [2]


async def test_a_newer_feature_schema_is_refused_by_name(store: SQLiteStore) -> None:
    await store.database.migrate("quotes", quotes_schema.MIGRATIONS)
    await store.database.execute("UPDATE schema_versions SET version = 99 WHERE owner = 'quotes'")
    with pytest.raises(StoreError, match=r"quotes schema version 99.*upgrade the bot"):
        await store.database.migrate("quotes", quotes_schema.MIGRATIONS)
