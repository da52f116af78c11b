"""Settings are read in one place, ``bot/config.py``: no other part of the bot reads the
environment (a setting read somewhere else escapes validation at start and the docs' list)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
READS = re.compile(r"os\.environ\.get\(|os\.environ\[|os\.getenv\(|environ\.get\(")


def test_only_bot_config_reads_the_environment() -> None:
    readers = []
    for path in sorted((ROOT / "bot").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "bot/config.py" or rel.startswith("bot/testing/"):  # the test kit sets up processes
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if READS.search(line):
                readers.append(f"{rel}:{n}: {line.strip()}")
    assert readers == []
