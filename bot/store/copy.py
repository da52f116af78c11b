"""``python -m bot migrate-db --to postgresql://…``: copy a SQLite database into PostgreSQL.

Contract:

* the target gets every owner's PostgreSQL migrations first (the conversation store's and
  each feature's that has them); the tables copied are those the source has AND the target
  then has — read from both schemas, so a table added later is copied without editing this;
* rows go in batches, each batch one transaction, ``ON CONFLICT DO NOTHING``: running it
  twice copies nothing twice (every table has a primary key), and an interrupted run is
  finished by the next; identity sequences are moved past the copied ids;
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
SKIP = {"schema_versions"}


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
        for table in tables:
            report.copied[table] = await _copy_table(src, target, table, out)
        for table in tables:
            a = (await src.execute_fetchall(f'SELECT COUNT(*) FROM "{table}"'))[0][0]  # noqa: S608
            b = await target.fetchone(f'SELECT COUNT(*) FROM "{table}"')
            report.counts[table] = (int(a), int(b[0]) if b else 0)
    finally:
        await src.close()
        await target.close()
    return report


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
    insert = (f'INSERT INTO "{table}" ({quoted}) VALUES ({", ".join("?" for _ in cols)}) '  # noqa: S608
              "ON CONFLICT DO NOTHING")
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
