"""Looking for a string everywhere a bot database keeps it: every column of every table, and
the raw bytes of the database file and its write-ahead log (free pages included).

``db_path`` is a SQLite file or — the ``both_stores`` tests — a PostgreSQL URL (its tables are
read with ``psql``; the raw bytes are the server's own files, which keep a deleted row until
vacuum: the store's contract there is "gone from every query", so ``byte_hits`` has nothing
to look at)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

from bot.store import is_postgres
from bot.testing.pgserver import bin_dir


def _psql(url: str, sql: str) -> list[str]:
    out = subprocess.run([str(bin_dir() / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url,
                          "-c", sql], capture_output=True, text=True, check=True, timeout=60)
    return [line for line in out.stdout.splitlines() if line]


def _pg_table_hits(url: str, needles: list[str]) -> list[str]:
    hits = []
    tables = _psql(url, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1")
    for t in tables:
        for line in _psql(url, f'SELECT row_to_json(r)::text FROM "{t}" AS r'):
            for col, value in json.loads(line).items():
                text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
                hits += [f"{t}.{col}: {n}" for n in needles if n in text]
    return hits


def table_hits(db_path: str | Path, needles: list[str]) -> list[str]:
    """``table.column`` places (read through a fresh connection) where a needle occurs."""
    if is_postgres(str(db_path)):
        return _pg_table_hits(str(db_path), needles)
    hits = []
    con = sqlite3.connect(str(db_path))
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for t in tables:
            cols = [r[1] for r in con.execute(f'PRAGMA table_info("{t}")')]
            for row in con.execute(f'SELECT * FROM "{t}"'):
                for col, value in zip(cols, row, strict=True):
                    blob = value if isinstance(value, bytes) else str(value).encode()
                    for n in needles:
                        if n.encode() in blob:
                            hits.append(f"{t}.{col}: {n}")
    finally:
        con.close()
    return hits


def byte_hits(db_path: str | Path, needles: list[str]) -> list[str]:
    """Files (the database, ``-wal``, ``-journal``) whose raw bytes contain a needle (SQLite)."""
    if is_postgres(str(db_path)):
        return []
    hits = []
    for suffix in ("", "-wal", "-journal"):
        f = Path(f"{db_path}{suffix}")
        if f.exists():
            data = f.read_bytes()
            hits += [f"{f.name}: {n}" for n in needles if n.encode() in data]
    return hits
