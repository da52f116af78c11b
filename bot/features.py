"""The features this bot ships with, wired to each other: what every door, benchmark and test
passes to ``bot.runtime.open_runtime``.

    features = standard_features(settings)
    runtime = await open_runtime(db, content_dir, flows_dir, features=features.all)
    await runtime.start(Ports(..., alerter=features.agents if <agents' group> else None))

Order: the quote worker starts first and stops last; the agents' desk stops first (as
``python -m bot run`` always did: the desk must not be mid-write when the worker releases its
claims). An alert the worker raises before the desk is up waits for it (``Agents.alert``).
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.agents.feature import Agents
from bot.config import Settings
from bot.escalation.service import Escalation
from bot.runtime import Feature


@dataclass(frozen=True)
class Features:
    quotes: Escalation
    agents: Agents

    @property
    def all(self) -> tuple[Feature, ...]:
        return (self.quotes, self.agents)


def standard_features(
    settings: Settings | None = None, *, desk: bool = True, deliver: bool = True
) -> Features:
    """The quote request and the agents' feature. ``desk=False``: no agents' desk (the
    terminal chat, most tests); ``deliver=False``: no outbox worker."""
    settings = settings or Settings()
    quotes = Escalation(settings, deliver=deliver)
    return Features(quotes=quotes, agents=Agents(settings, desk=desk, quotes=quotes))
