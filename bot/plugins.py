"""Features beyond the core that plug into the engine: extra flow actions and commands.

The core engine knows nothing of quotes or agents; this module hands their actions and
commands to it. ``store`` is None when only the names are needed (``python -m bot check``).

Quotes (bot/escalation): the actions of flows/quote.yaml and the /quote and /status
commands. The outbox worker that delivers the requests is started by the door
(``bot.escalation.attach_escalation``), not here.

Agents (bot/agents): the users' /privacy and /forget, and the hand-back command an agent's
/done sends through the engine. The desk itself is started by the Telegram door.
"""

from __future__ import annotations

from bot.core.actions import ActionFn
from bot.core.engine import CommandFn


def plugin_actions(store: object | None = None) -> dict[str, tuple[ActionFn, tuple[str, ...]]]:
    from bot.escalation.form import plugin_parts

    actions: dict[str, tuple[ActionFn, tuple[str, ...]]] = {}
    actions.update(plugin_parts(store)[0])
    return actions


def plugin_commands(store: object | None = None) -> dict[str, CommandFn]:
    from bot.agents.commands import agent_commands
    from bot.escalation.form import plugin_parts

    commands: dict[str, CommandFn] = {}
    commands.update(plugin_parts(store)[1])
    commands.update(agent_commands(store))  # /privacy, /forget, and the agents' hand-back
    return commands
