"""Learning from agents: labelled messages become matcher examples, live.

Contract:

* :class:`LearnedSync` feeds the rows of ``learned_examples`` into a running matcher:
  all of them at start (:meth:`LearnedSync.refresh`), then new ones every few seconds
  (:meth:`LearnedSync.start`), so an example imported by ``python -m bot learn import`` into
  the bot's database, or labelled by an agent, takes effect without a restart.
* :func:`import_jsonl` reads lines ``{"text": ..., "intent": ...}`` (``"none"`` = out of
  scope); a bad line is reported with its number and skipped, never half-imported.
* :func:`export_yaml` writes the learned examples as YAML grouped by intent, for review
  before they move into content/en/intents.yaml.
* :func:`conflicts` lists texts learned under two intents, and unknown intent ids
  (``python -m bot check --db``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import yaml

from bot.core.errors import Problem
from bot.core.matcher import NONE, Matcher
from bot.store.learned import LearnedRow, LearnedStore

log = logging.getLogger(__name__)

POLL_S = 2.0


class LearnedSync:
    def __init__(self, learned: LearnedStore, matcher: Matcher, poll_s: float = POLL_S) -> None:
        self.learned = learned
        self.matcher = matcher
        self.poll_s = poll_s
        self.last_id = 0
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> int:
        """Teach the matcher every row it has not seen yet; returns how many were added."""
        rows = await self.learned.since(self.last_id)
        if not rows:
            return 0
        self.last_id = rows[-1].id
        added = self.matcher.learn((r.text, r.intent) for r in rows)
        log.info("matcher learned %d example(s) from agents", added)
        return added

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="learned-sync")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.refresh()
            except Exception:  # the next poll tries again; the conversation never notices
                log.exception("reading learned examples failed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None


async def import_jsonl(learned: LearnedStore, intents: Sequence[str], path: Path,
                       source: str = "") -> tuple[int, int, list[str]]:
    """Import one file; returns (added, already known, problems as 'file:line: message')."""
    valid = set(intents) | {NONE}
    good: list[tuple[str, str]] = []
    problems: list[str] = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        return 0, 0, [f"{path}: cannot read: {exc}"]
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{path}:{n}: not JSON: {exc.msg}")
            continue
        text = item.get("text") if isinstance(item, dict) else None
        intent = item.get("intent") if isinstance(item, dict) else None
        if not isinstance(text, str) or not text.strip():
            problems.append(f"{path}:{n}: needs a non-empty \"text\"")
            continue
        if intent not in valid:
            problems.append(f"{path}:{n}: unknown intent {intent!r} (an intent id or \"none\")")
            continue
        good.append((text, intent))
    if problems:
        return 0, 0, problems
    added = known = 0
    for text, intent in good:
        if await learned.add(text, intent, source or f"import:{Path(path).name}"):
            added += 1
        else:
            known += 1
    return added, known, []


def export_yaml(rows: Sequence[LearnedRow]) -> str:
    by_intent: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        by_intent[r.intent].append(r.text)
    head = ("# Examples agents taught the bot (python -m bot learn export). Review them, then move\n"
            "# the good ones into content/en/intents.yaml (none = out_of_scope examples).\n")
    return head + yaml.safe_dump({"learned": dict(sorted(by_intent.items()))}, allow_unicode=True,
                                 sort_keys=False, width=100)


def conflicts(rows: Sequence[LearnedRow], matcher: Matcher, where: str) -> list[Problem]:
    """Texts learned under two intents (after normalisation), and unknown intent ids."""
    valid = set(matcher.intents) | {NONE}
    seen: dict[str, LearnedRow] = {}
    problems: list[Problem] = []
    norm = matcher.normalize
    for r in rows:
        if r.intent not in valid:
            problems.append(Problem(where, f"learned_examples[{r.id}]", f"unknown intent {r.intent!r}"))
            continue
        key = norm(r.text)
        other = seen.get(key)
        if other is not None and other.intent != r.intent:
            problems.append(Problem(where, f"learned_examples[{r.id}]",
                                    f"{r.text!r} learned as {other.intent} (row {other.id}) and as {r.intent}"))
        seen.setdefault(key, r)
    return problems
