"""Looking for a string everywhere a bot database keeps it: every column of every table, and
the raw bytes of the database file and its write-ahead log (free pages included)."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def table_hits(db_path: str | Path, needles: list[str]) -> list[str]:
    """``table.column`` places (read through a fresh connection) where a needle occurs."""
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
    """Files (the database, ``-wal``, ``-journal``) whose raw bytes contain a needle."""
    hits = []
    for suffix in ("", "-wal", "-journal"):
        f = Path(f"{db_path}{suffix}")
        if f.exists():
            data = f.read_bytes()
            hits += [f"{f.name}: {n}" for n in needles if n.encode() in data]
    return hits
