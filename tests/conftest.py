"""Shared fixtures: the loaded content (once per session), a temp SQLite store, an engine."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.config import Settings
from bot.core.engine import Engine
from bot.features import Features, standard_features
from bot.runtime import Knowledge, Runtime, load_knowledge, open_runtime
from bot.store import SQLiteStore, open_store
from tests.support.chat import ChatDriver
from tests.support.postgres import (  # noqa: F401 - fixtures
    db_kind,
    db_target,
    parametrize_stores,
    pg_databases,
    pg_dsn,
    pg_migrated_dsn,
    pg_server,
    pg_template,
)

ROOT = Path(__file__).resolve().parents[1]

# httpx honours proxy variables even for 127.0.0.1; tests only talk to loopback.
os.environ["NO_PROXY"] = "127.0.0.1,localhost"
os.environ["no_proxy"] = "127.0.0.1,localhost"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize_stores(metafunc)  # ``both_stores`` tests run on SQLite and on PostgreSQL


@pytest.fixture(scope="session")
def knowledge() -> Knowledge:
    return load_knowledge(ROOT / "content", ROOT / "flows", "en", standard_features().all)


@pytest.fixture
async def store(db_target: str | Path) -> AsyncIterator[SQLiteStore]:
    """The conversation store: a SQLite file, or — for a test marked ``both_stores``
    (tests/support/postgres.py) — also a fresh database on the session's PostgreSQL server."""
    s = await open_store(db_target)
    yield s  # type: ignore[misc]
    await s.close()


@pytest.fixture
def features() -> Features:
    """The bot's features, no background work: no agents' desk, no outbox worker (a test
    that needs the worker starts it: ``features.quotes.start_worker(...)``)."""
    return standard_features(Settings(), desk=False, deliver=False)


@pytest.fixture
async def runtime(knowledge: Knowledge, store: SQLiteStore, features: Features) -> AsyncIterator[Runtime]:
    rt = await open_runtime(store, ROOT / "content", ROOT / "flows", features=features.all, knowledge=knowledge)
    yield rt
    await rt.stop()
    await features.quotes.close()
    await features.agents.close()


@pytest.fixture
def engine(runtime: Runtime) -> Engine:
    return runtime.engine


@pytest.fixture
def chat(engine: Engine) -> ChatDriver:
    return ChatDriver(engine)
