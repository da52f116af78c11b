"""The agents feature's user commands, handed to the engine by ``feature.Agents``:

* ``/privacy`` — what is stored, who reads it, for how long, what /forget removes and what it
  cannot — put together from the settings in force (``privacy_text``);
* ``/forget``  — erase this conversation and everything stored about it, now (an argument is
  refused: ``/forget 3`` is an agent naming a case, never "erase this chat"). It works during a
  takeover too (the engine lets it through the pause);
* ``/resume``  — show where the conversation stands (the desk uses it to hand a conversation
  back after a takeover: ``/resume agent`` and ``/resume menu`` ask the satisfaction question
  first (flows/feedback.yaml), then continue where it was / at the menu; ``/resume expired``;
  ``/resume waiting <when>`` tells a customer left unanswered when a person will reply).
* ``agents:handback`` — the same for the desk (``agents:handback agent|menu|expired|waiting``):
  not a Telegram command, so no user can send it, and it leaves no user line in the transcript.

/forget deletes in the turn, then once more right after it: the engine saves every turn
(state row, the "/forget" line, the reply) after the command ran, and those rows must go
too. The second pass waits for the conversation's lock, i.e. for the turn to be saved; the
feature owns the task (``Agents.track``) and waits for it when it closes.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import replace
from typing import TYPE_CHECKING

from bot.core.engine import RETURN_TO, CommandFn, Turn
from bot.core.flows import MENU
from bot.core.ports import Direction, State
from bot.store.database import StoreError

from . import privacy

if TYPE_CHECKING:
    from .feature import Agents

log = logging.getLogger(__name__)

HANDBACK_COMMAND = "agents:handback"  # the desk's hand-back (a user cannot type it on Telegram)
FEEDBACK = "feedback.start"  # flows/feedback.yaml: "how helpful was our support person?"


def agent_commands(agents: Agents) -> dict[str, CommandFn]:
    """Engine commands of the agents feature, bound to its instance."""

    async def cmd_privacy(turn: Turn, _arg: str) -> None:
        summary = await privacy.stored_summary(agents.store, turn.state.conversation_id)
        turn.say_text(privacy_text(agents, turn, summary.messages + 1), key="agents.privacy")
        await turn.engine.reprompt(turn)

    async def cmd_forget(turn: Turn, arg: str) -> None:
        if arg.strip():  # "/forget 3" is an agent naming a case, never this chat: refuse, erase nothing
            turn.say("agents.forget_with_arg")
            await turn.engine.reprompt(turn)
            return
        cid = turn.state.conversation_id
        store = agents.store
        agents.forgetting(cid)
        await privacy.forget_conversation(store.db, cid, scrub=False, lock=store.tx_lock)
        turn.state = State(cid, lang=turn.state.lang)
        turn.entries.clear()
        turn.say("agents.forgotten")
        turn.event("forgotten")
        agents.track(_after_turn(agents, turn, cid))

    async def cmd_resume(turn: Turn, arg: str) -> None:
        mode, _, when = arg.strip().partition(" ")
        mode = mode.lower()
        rate = turn.engine.flows.has(FEEDBACK)  # the satisfaction question after a person helped
        if mode == "menu":
            keep = {k: v for k, v in turn.state.values.items() if k.startswith("keep_")}
            turn.state = replace(turn.state, flow="", step="", history=(), offer=(), misses=0, values=keep)
            turn.say("agents.handback_menu")
            await turn.engine.goto(turn, FEEDBACK if rate else MENU, remember=False)  # the menu after it
            return
        if mode == "agent" and rate:
            turn.say("agents.handback_resume")
            if turn.state.ref:  # rated (or skipped), the conversation goes on where it was
                turn.set_values([(RETURN_TO, turn.state.ref)])
            await turn.engine.goto(turn, FEEDBACK)
            return
        if mode == "waiting":  # the pause expired over an unanswered message: say what happens next
            turn.say("agents.pause_expired_waiting", {"when": when.strip()})
            await turn.engine.reprompt(turn)
            return
        key = {"agent": "agents.handback_resume", "expired": "agents.pause_expired"}.get(mode, "agents.resume")
        turn.say(key)
        await turn.engine.reprompt(turn)

    async def cmd_handback(turn: Turn, arg: str) -> None:
        # the desk's /resume: no "/agents:handback" line from the user in the transcript (the
        # desk notes the hand-back itself); a user can't send it (not a Telegram command)
        turn.entries[:] = [e for e in turn.entries if not (e.direction is Direction.IN and e.kind == "command")]
        await cmd_resume(turn, arg)

    return {"privacy": cmd_privacy, "forget": cmd_forget, "resume": cmd_resume, HANDBACK_COMMAND: cmd_handback}


def privacy_text(agents: Agents, turn: Turn, messages: int) -> str:
    """/privacy from the settings in force: who reads the conversation (an agents' group or
    nobody), how long lines, conversations and quote requests are kept, what /forget removes
    and what it cannot."""
    o = agents.options
    content = turn.engine.content
    env = {"messages": str(messages), "days": str(o.retention_days), "quote_days": str(o.quote_retention_days)}
    keys = ["agents.privacy_stored", "agents.privacy_secrets"]
    keys.append("agents.privacy_team" if agents.enabled else "agents.privacy_no_team")
    keys += ["agents.privacy_kept", "agents.privacy_quotes", "agents.privacy_forget", "agents.privacy_cannot"]
    return "\n\n".join(content.text(k, env) for k in keys)


async def _after_turn(agents: Agents, turn: Turn, cid: str) -> None:
    store = agents.store
    upto = 0
    try:
        async with turn.engine.lock_for(cid):  # held by the turn until it is saved
            await privacy.forget_conversation(store.db, cid, lock=store.tx_lock)
            upto = await store.last_message_id()
    except (sqlite3.Error, StoreError):
        log.exception("forget: the second pass for %s failed", cid)
    finally:
        agents.forgotten(cid, upto)
