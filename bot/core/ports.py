"""Ports: what the engine needs from the outside (a store), as Protocols, plus the
typed records that cross them (conversation state, transcript entries)."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class State:
    """Where one conversation stands. Replaced, never mutated."""

    conversation_id: str
    flow: str = ""  # "" before the first message
    step: str = ""
    seq: int = 0  # bumped whenever new buttons are shown; button ids carry it
    values: Mapping[str, str] = field(default_factory=dict)
    history: tuple[str, ...] = ()  # earlier waiting steps ("flow.step"), for /back
    offer: tuple[str, ...] = ()  # engine-made buttons now valid (suggestions, switch offers)
    misses: int = 0  # messages in a row the matcher did not understand
    active: bool = True  # False once the user blocked the bot
    paused: bool = False  # True while a human agent has taken over
    user_name: str = ""
    lang: str = "en"

    @property
    def ref(self) -> str:
        return f"{self.flow}.{self.step}" if self.flow else ""


class Direction(enum.Enum):
    IN = "in"
    OUT = "out"
    AGENT = "agent"  # a human agent's message to the user
    NOTE = "note"  # an event (escalation, takeover) for the transcript


@dataclass(frozen=True)
class Entry:
    """One transcript line. ``text`` is already redacted."""

    direction: Direction
    text: str
    kind: str = "text"  # text | button | command | media | reply
    intent: str | None = None
    score: float | None = None
    decision: str | None = None  # accept | suggest | reject (for matched user text)
    candidates: tuple[tuple[str, float], ...] = ()
    flow: str = ""
    step: str = ""


class ConversationStore(Protocol):
    async def load_state(self, conversation_id: str) -> State | None: ...

    async def save_turn(self, state: State, entries: Sequence[Entry], events: Sequence[str] = ()) -> None:
        """Write the new state and the turn's transcript lines in one transaction (with the
        anonymous counters for the turn's ``events``, e.g. ``quote_sent``)."""
        ...


@runtime_checkable
class TurnScope(Protocol):
    """Optional, on a store that several processes share: ``turn(conversation_id)`` holds the
    conversation across processes for one turn — the engine loads and saves inside it (one
    transaction), so turns of one conversation stay strictly ordered whichever process runs
    them. A store of one process needs none: the engine's in-process lock is enough."""

    def turn(self, conversation_id: str) -> AbstractAsyncContextManager[object]: ...

