"""Shared fixtures: the loaded content (once per session), a temp SQLite store, an engine."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.core.engine import Engine
from bot.runtime import Knowledge, load_knowledge, plugin_branches
from bot.store import SQLiteStore
from tests.support.chat import ChatDriver

ROOT = Path(__file__).resolve().parents[1]

# httpx honours proxy variables even for 127.0.0.1; tests only talk to loopback.
os.environ["NO_PROXY"] = "127.0.0.1,localhost"
os.environ["no_proxy"] = "127.0.0.1,localhost"


@pytest.fixture(scope="session")
def knowledge() -> Knowledge:
    return load_knowledge(ROOT / "content", ROOT / "flows", "en", plugin_branches())


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = await SQLiteStore.open(tmp_path / "test.db")
    yield s
    await s.close()


@pytest.fixture
def engine(knowledge: Knowledge, store: SQLiteStore) -> Engine:
    from bot.plugins import plugin_actions, plugin_commands

    return Engine(knowledge.content, knowledge.flows, knowledge.matcher, store,
                  extra_actions=plugin_actions(store), commands=plugin_commands(store))


@pytest.fixture
def chat(engine: Engine) -> ChatDriver:
    return ChatDriver(engine)
