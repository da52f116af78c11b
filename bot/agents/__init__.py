"""Support agents: live transcripts in a forum supergroup, takeover, hand-back, agents' tools.

A feature behind the runtime's seam: ``feature.Agents`` is the feature object (passed to
``open_runtime``). The desk (``desk.AgentDesk``) is an engine listener with its own queues,
and reaches Telegram only through the ``ports.GroupGateway`` protocol
(``bot.tg.agents_gateway.PTBGateway`` on python-telegram-bot; ``memory.MemoryGateway`` for tests).
``commands`` adds /privacy, /forget and /resume to the engine; ``privacy`` erases and purges;
``reports`` answers /stats, /unmatched, /find and /transcript (and their terminal twins in
``cli``). ``bot/testing/bench_agents.py`` measures the mirror under load. See docs/agents.md.
"""

from .desk import AgentCallback, AgentCommand, AgentDesk, AgentMessage, DeskOptions
from .feature import Agents
from .limiter import GroupLimiter
from .ports import GroupGateway, ManualClock, ScaledClock, SystemClock

__all__ = [
    "Agents",
    "AgentDesk",
    "AgentMessage",
    "AgentCommand",
    "AgentCallback",
    "DeskOptions",
    "GroupLimiter",
    "GroupGateway",
    "ManualClock",
    "ScaledClock",
    "SystemClock",
]
