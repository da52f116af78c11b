"""Agents label unmatched messages in the group: one tap teaches the matcher.

Contract: :func:`pending` lists the latest messages the matcher rejected or was unsure
about, newest first, leaving out those already taught; :func:`buttons` gives each one its
candidate intents plus "out of scope" as (label, callback data) pairs, the data
``lbl:<unmatched id>:<0|1|2|x>`` (always within Telegram's 64 bytes); :func:`apply` turns a
press into a learned example (``bot.store.learned``), which the running bot reads within
seconds (``bot.learning.LearnedSync``). A press for a row that is gone, or a malformed one,
is answered, never raised. The desk only forwards: it calls these three.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from bot.store.learned import LearnedStore
from bot.store.sqlite import SQLiteStore

from .registry import Registry

PREFIX = "lbl:"
OUT_OF_SCOPE = "x"


@dataclass(frozen=True)
class Pending:
    id: int
    text: str
    decision: str
    candidates: tuple[str, ...]  # intent ids, best first (at most 3)


async def pending(store: SQLiteStore, limit: int = 5) -> list[Pending]:
    rows = await Registry(store.db).unlabelled(limit)
    out = []
    for r in rows:
        try:
            cands = tuple(str(c[0]) for c in json.loads(r[3]))[:3]
        except (ValueError, TypeError, IndexError, KeyError):
            cands = ()
        out.append(Pending(int(r[0]), str(r[1]), str(r[2]), cands))
    return out


def buttons(item: Pending, title: Callable[[str], str], out_of_scope_label: str) -> list[tuple[str, str]]:
    """(label, callback data): the candidates by their topic titles, then "out of scope"."""
    out = [(title(intent), f"{PREFIX}{item.id}:{i}") for i, intent in enumerate(item.candidates)]
    out.append((out_of_scope_label, f"{PREFIX}{item.id}:{OUT_OF_SCOPE}"))
    return out


async def apply(store: SQLiteStore, data: str, agent: str = "") -> tuple[str, str] | None:
    """Learn from one press: (text, intent or "none") taught, or None if the press is stale/bad."""
    if not data.startswith(PREFIX):
        return None
    ref, _, choice = data[len(PREFIX):].partition(":")
    if not ref.isdigit():
        return None
    row = await Registry(store.db).unmatched_row(int(ref))
    if row is None:
        return None
    text, candidates = row
    if choice == OUT_OF_SCOPE:
        intent = "none"
    else:
        try:
            intent = str(json.loads(candidates)[int(choice)][0])
        except (ValueError, TypeError, IndexError, KeyError):
            return None
    await LearnedStore(store).add(text, intent, f"agent:{agent}"[:200])
    return text, intent


# -- what the desk shows (texts from content/en/agents.yaml) ----------------------------------


def _title(texts, intent: str) -> str:  # noqa: ANN001 - bot.agents.render.Texts
    key = f"menu.{intent}"
    return texts.plain(key) if texts.has(key) else intent


async def offers(store: SQLiteStore, texts, limit: int = 5) -> list[tuple[str, list[tuple[str, str]]]]:  # noqa: ANN001
    """(HTML, buttons) for each message waiting for a label, newest first."""
    out = []
    for item in await pending(store, limit):
        html = texts("agents.desk.label_prompt", text=item.text[:300]).html
        out.append((html, buttons(item, lambda i: _title(texts, i), texts.plain("agents.desk.label_none"))))
    return out


async def on_press(store: SQLiteStore, texts, data: str, agent: str) -> tuple[str, str]:  # noqa: ANN001
    """(toast, new HTML for the message or "") for a press on a label button."""
    taught = await apply(store, data, agent)
    if taught is None:
        return texts.plain("agents.desk.label_gone"), ""
    text, intent = taught
    label = texts.plain("agents.desk.label_none") if intent == "none" else _title(texts, intent)
    return (texts.plain("agents.desk.label_done_toast", label=label),
            texts("agents.desk.label_done", text=text[:300], label=label, agent=agent or "?").html)
