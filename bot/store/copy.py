"""``python -m bot migrate-db --to postgresql://…``: copy a SQLite database into PostgreSQL.

Contract:

* the target gets every owner's PostgreSQL migrations first (the conversation store's and
  each feature's that has them); the tables copied are those the source has AND the target
  then has — read from both schemas, so a table added later is copied without editing this;
* the target must be empty, or an earlier copy of THIS source (a first run marks the target in
  a table of its own, ``migrate_db_copies``, before copying a row). Anything else is refused
  before a row is written (``CopyRefused``, exit 2, the table named): a target that holds
  rows no copy put there (another installation's, or a bot already ran on it), a marked
  target whose transcript disagrees with the source's (``messages`` rows of the same id with
  another conversation or time: another installation), or one a bot has written to since the
  copy (rows with ids the source never handed out);
* a second run (or one after an interrupted run) brings the target up to date with the
  source: rows the source no longer has (an erasure, the retention purge since the last copy)
  are deleted, the rest go in batches, each batch one transaction, ``INSERT … ON CONFLICT
  (primary key) DO UPDATE`` — nothing doubled, changed rows (a conversation that went on)
  updated; identity sequences are moved past the copied ids;
* columns are matched by name and values converted to the target column's type (SQLite
  lets a column hold any type);
* a progress bar per table on stderr; at the end every table's row count is compared: a
  table whose counts differ — or a source table with rows and no PostgreSQL table — is named
  and the result is False (exit 1). Stop the bot first: a copy of a file being written is not
  a consistent one.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiosqlite

from .database import Migrations, StoreError
from .postgres import PostgresDatabase

BATCH = 500
MARK = "migrate_db_copies"
SKIP = {"schema_versions", MARK}


class CopyRefused(StoreError):
    """The target is not empty and not a copy of this source (the message names the table)."""


@dataclass
class CopyReport:
    copied: dict[str, int] = field(default_factory=dict)  # rows inserted by this run
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # table: (source, target)
    left_behind: dict[str, int] = field(default_factory=dict)  # source tables with no target table

    @property
    def mismatched(self) -> list[str]:
        bad = [t for t, (a, b) in self.counts.items() if a != b]
        return bad + [t for t, n in self.left_behind.items() if n]


def _convert(kind: str) -> Callable[[Any], Any]:
    kind = kind.lower()
    if kind in ("integer", "bigint", "smallint"):
        return lambda v: None if v is None else int(v)
    if kind in ("double precision", "real", "numeric"):
        return lambda v: None if v is None else float(v)
    if kind == "bytea":
        return lambda v: None if v is None else (v if isinstance(v, bytes) else str(v).encode())
    return lambda v: v if v is None or isinstance(v, str) else (
        v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v))


class _Progress:
    def __init__(self, out: TextIO, table: str, total: int) -> None:
        self.out, self.table, self.total = out, table, total

    def show(self, done: int) -> None:
        width = 30
        filled = width if not self.total else int(width * done / self.total)
        self.out.write(f"\r{self.table:<20} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total}")
        self.out.flush()

    def end(self) -> None:
        self.out.write("\n")
        self.out.flush()


async def _order(target: PostgresDatabase, tables: Sequence[str]) -> list[str]:
    """Referenced tables before the tables that reference them (foreign keys)."""
    rows = await target.fetchall(
        "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint WHERE contype = 'f'"
    )
    needs: dict[str, set[str]] = {t: set() for t in tables}
    for child, parent in rows:
        if child in needs and parent in needs and child != parent:
            needs[child].add(parent)
    ordered: list[str] = []
    while needs:
        ready = sorted(t for t, deps in needs.items() if not deps - set(ordered))
        if not ready:  # a cycle: keep the rest in name order
            ready = sorted(needs)
        for t in ready:
            ordered.append(t)
            needs.pop(t)
    return ordered


async def copy_sqlite_to_postgres(source: str | Path, target_url: str, owners: Sequence[tuple[str, Migrations]],
                                  *, out: TextIO | None = None, pool_size: int = 4,
                                  connect_timeout: float = 5.0) -> CopyReport:
    out = out or sys.stderr
    path = Path(source)
    if not path.is_file():
        raise StoreError(f"no SQLite database at {path} (set BOT_DB or pass --db)")
    src = await aiosqlite.connect(f"file:{path}?mode=ro", uri=True)
    target = await PostgresDatabase.open(target_url, pool_size=pool_size, connect_timeout=connect_timeout)
    report = CopyReport()
    try:
        for owner, migrations in owners:
            try:
                await target.migrate(owner, migrations)
            except StoreError as exc:
                if "has no postgresql schema" not in str(exc):
                    raise
        src_tables = [str(r[0]) for r in await src.execute_fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY 1")]
        dst_tables = set(await target.tables())
        for t in src_tables:
            if t not in dst_tables and t not in SKIP:
                n = (await src.execute_fetchall(f'SELECT COUNT(*) FROM "{t}"'))[0][0]  # noqa: S608 - a table name from the schema
                report.left_behind[t] = int(n)
        tables = await _order(target, [t for t in src_tables if t in dst_tables and t not in SKIP])
        await _claim(src, target, tables, path)
        for table in reversed(tables):  # rows the source no longer has: referencing tables first
            await _delete_gone(src, target, table)
        for table in tables:
            report.copied[table] = await _copy_table(src, target, table, out)
        for table in tables:
            a = (await src.execute_fetchall(f'SELECT COUNT(*) FROM "{table}"'))[0][0]  # noqa: S608
            b = await target.fetchone(f'SELECT COUNT(*) FROM "{table}"')
            report.counts[table] = (int(a), int(b[0]) if b else 0)
        await target.execute(f"UPDATE {MARK} SET last_copy_at = now()")
    finally:
        await src.close()
        await target.close()
    return report


def _q(name: str) -> str:
    return f'"{name}"'


async def _primary_key(target: PostgresDatabase, table: str) -> list[str]:
    rows = await target.fetchall(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = ?::regclass AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)",
        (f'"{table}"',))
    return [str(r[0]) for r in rows]


async def _identity(target: PostgresDatabase, table: str) -> list[str]:
    rows = await target.fetchall(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = ? AND is_identity = 'YES'", (table,))
    return [str(r[0]) for r in rows]


async def _claim(src: aiosqlite.Connection, target: PostgresDatabase, tables: Sequence[str], path: Path) -> None:
    """Refuse a target that is not empty and not a copy of this source; mark an empty one."""
    await target.execute(f"CREATE TABLE IF NOT EXISTS {MARK} (source TEXT NOT NULL, first_copy_at TIMESTAMPTZ "
                         "NOT NULL DEFAULT now(), last_copy_at TIMESTAMPTZ)")
    marked = await target.fetchone(f"SELECT source FROM {MARK} LIMIT 1")  # noqa: S608
    filled = []
    for table in tables:
        row = await target.fetchone(f'SELECT COUNT(*) FROM "{table}"')  # noqa: S608
        if row and int(row[0]):
            filled.append((table, int(row[0])))
    if marked is None:
        if filled:
            table, n = filled[0]
            raise CopyRefused(
                f"{target.path} already holds data no migrate-db copy put there ({table}: {n} rows): another "
                "installation's, or a bot already ran on it. Copy into an empty database.")
        await target.execute(f"INSERT INTO {MARK} (source) VALUES (?)", (str(path.resolve()),))
        return
    if "messages" in dict(filled):
        await _same_transcript(src, target, path)
    for table, _ in filled:
        for col in await _identity(target, table):  # ids only the source hands out until the switch
            top_src = (await src.execute_fetchall(f'SELECT MAX("{col}") FROM "{table}"'))[0][0]  # noqa: S608
            top_dst = await target.fetchone(f'SELECT MAX("{col}") FROM "{table}"')  # noqa: S608
            if top_dst and top_dst[0] is not None and int(top_dst[0]) > int(top_src or 0):
                raise CopyRefused(
                    f"{target.path}: a bot has written to it since the last copy ({table}.{col} {top_dst[0]} is "
                    f"newer than anything in {path.name}); copying again would undo its work. Refusing.")


async def _same_transcript(src: aiosqlite.Connection, target: PostgresDatabase, path: Path) -> None:
    """Transcript lines of the same id must be the same line (conversation, time): else the
    target holds another installation's transcript."""
    async with src.execute("SELECT id, conversation_id, ts FROM messages ORDER BY id") as cur:
        while batch := await cur.fetchmany(BATCH):
            ids = [int(r[0]) for r in batch]
            theirs = {int(r[0]): (str(r[1]), float(r[2])) for r in await target.fetchall(
                "SELECT id, conversation_id, ts FROM messages WHERE id = ANY(?::bigint[])", (ids,))}
            for i, cid, ts in batch:
                other = theirs.get(int(i))
                if other is not None and (other[0] != str(cid) or abs(other[1] - float(ts)) > 1e-3):
                    raise CopyRefused(
                        f"{target.path} holds another installation's transcript (messages id {i} is another "
                        f"line than in {path.name}). Copy into an empty database.")


async def _delete_gone(src: aiosqlite.Connection, target: PostgresDatabase, table: str) -> None:
    """Delete the target's rows whose primary key the source no longer has."""
    key = await _primary_key(target, table)
    if not key:
        return
    n = await target.fetchone(f'SELECT COUNT(*) FROM "{table}"')  # noqa: S608
    if not n or not int(n[0]):
        return
    cols = ", ".join(f'"{c}"' for c in key)
    async with src.execute(f'SELECT {cols} FROM "{table}"') as cur:  # noqa: S608
        keys = [tuple(r) for r in await cur.fetchall()]
    async with target.transaction() as tx:
        keep = _q(f"_keep_{table}")  # a name per table: asyncpg caches statements by their text
        await tx.execute(f'CREATE TEMP TABLE {keep} ON COMMIT DROP AS SELECT {cols} FROM "{table}" WITH NO DATA')  # noqa: S608
        kinds = {str(r[0]): str(r[1]) for r in await tx.fetchall(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = ?", (table,))}
        conv = [_convert(kinds[c]) for c in key]
        await tx.executemany(f"INSERT INTO {keep} VALUES ({', '.join('?' for _ in key)})",
                             [tuple(f(v) for f, v in zip(conv, k, strict=True)) for k in keys])
        match = " AND ".join(f't."{c}" = k."{c}"' for c in key)
        await tx.execute(f'DELETE FROM "{table}" AS t WHERE NOT EXISTS (SELECT 1 FROM {keep} AS k WHERE {match})')  # noqa: S608


async def _copy_table(src: aiosqlite.Connection, target: PostgresDatabase, table: str, out: TextIO) -> int:
    src_cols = [str(r[1]) for r in await src.execute_fetchall(f'PRAGMA table_info("{table}")')]
    info = await target.fetchall(
        "SELECT column_name, data_type, is_identity FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position", (table,))
    kinds = {str(r[0]): str(r[1]) for r in info}
    identity = [str(r[0]) for r in info if r[2] == "YES"]
    cols = [c for c in src_cols if c in kinds]
    converters = [_convert(kinds[c]) for c in cols]
    total = int((await src.execute_fetchall(f'SELECT COUNT(*) FROM "{table}"'))[0][0])  # noqa: S608
    quoted = ", ".join(f'"{c}"' for c in cols)
    key = await _primary_key(target, table)
    rest = [c for c in cols if c not in key]
    if key and rest:  # a row copied before is brought up to date (when it changed)
        changed = f"({', '.join(f't.{_q(c)}' for c in rest)}) IS DISTINCT FROM " \
                  f"({', '.join(f'excluded.{_q(c)}' for c in rest)})"
        conflict = (f"ON CONFLICT ({', '.join(map(_q, key))}) "
                    f"DO UPDATE SET {', '.join(f'{_q(c)} = excluded.{_q(c)}' for c in rest)} WHERE {changed}")
    else:
        conflict = "ON CONFLICT DO NOTHING"
    insert = (f'INSERT INTO "{table}" AS t ({quoted}) VALUES ({", ".join("?" for _ in cols)}) '  # noqa: S608
              + conflict)
    bar = _Progress(out, table, total)
    bar.show(0)
    done = inserted = 0
    async with src.execute(f'SELECT {quoted} FROM "{table}"') as cur:  # noqa: S608
        while True:
            batch = await cur.fetchmany(BATCH)
            if not batch:
                break
            rows = [tuple(f(v) for f, v in zip(converters, r, strict=True)) for r in batch]
            async with target.transaction() as tx:
                before = await tx.fetchone(f'SELECT COUNT(*) FROM "{table}"')  # noqa: S608
                await tx.executemany(insert, rows)
                after = await tx.fetchone(f'SELECT COUNT(*) FROM "{table}"')  # noqa: S608
            inserted += int(after[0]) - int(before[0])  # type: ignore[index]
            done += len(batch)
            bar.show(done)
    bar.end()
    for col in identity:  # the next id the database hands out comes after the copied ones
        await target.execute(
            f"SELECT setval(pg_get_serial_sequence('\"{table}\"', '{col}'), "
            f'GREATEST((SELECT COALESCE(MAX("{col}"), 0) FROM "{table}"), 1), '
            f'(SELECT COUNT(*) > 0 FROM "{table}"))'
        )
    return inserted
