"""The agents feature's user commands, plugged into the engine (bot/plugins.py):

* ``/privacy`` — what is stored and for how long, and how to erase it;
* ``/forget``  — erase this conversation and everything stored about it, now;
* ``/resume``  — show where the conversation stands (the desk uses it to hand a conversation
  back after a takeover: ``/resume agent``, ``/resume menu``, ``/resume expired``).

/forget deletes in the turn, then once more right after it: the engine saves every turn
(state row, the "/forget" line, the reply) after the command ran, and those rows must go
too. The second pass waits for the conversation's lock, i.e. for the turn to be saved.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

from bot.core.engine import CommandFn, Turn
from bot.core.flows import MENU
from bot.core.ports import State

from . import privacy

log = logging.getLogger(__name__)

_CLEANUPS: set[asyncio.Task[None]] = set()


def agent_commands(store: object | None = None, retention_days: int | None = None) -> dict[str, CommandFn]:
    """Engine commands of the agents feature (``store`` None: only the names matter)."""
    if retention_days is None:
        try:
            from bot.config import Settings

            retention_days = Settings.from_env().retention_days
        except Exception:  # a bad environment fails elsewhere, at start, with its name
            retention_days = 90
    days = retention_days

    async def cmd_privacy(turn: Turn, _arg: str) -> None:
        count = 0
        if store is not None:
            summary = await privacy.stored_summary(store.db, turn.state.conversation_id)  # type: ignore[attr-defined]
            count = summary.messages
        turn.say("agents.privacy", {"messages": str(count + 1), "days": str(days)})
        await _reprompt(turn)

    async def cmd_forget(turn: Turn, _arg: str) -> None:
        cid = turn.state.conversation_id
        if store is None:
            turn.say("agents.forgotten")
            return
        db = store.db  # type: ignore[attr-defined]
        privacy.notify_forgetting(cid)
        await privacy.forget_conversation(db, cid, scrub=False, lock=getattr(store, "tx_lock", None))
        turn.state = State(cid, lang=turn.state.lang)
        turn.entries.clear()
        turn.say("agents.forgotten")
        turn.event("forgotten")
        task = asyncio.ensure_future(_after_turn(turn, db, cid))
        _CLEANUPS.add(task)
        task.add_done_callback(_CLEANUPS.discard)

    async def cmd_resume(turn: Turn, arg: str) -> None:
        mode = arg.strip().lower()
        if mode == "menu":
            keep = {k: v for k, v in turn.state.values.items() if k.startswith("keep_")}
            turn.state = replace(turn.state, flow="", step="", history=(), offer=(), misses=0, values=keep)
            turn.say("agents.handback_menu")
            await turn.engine.goto(turn, MENU, remember=False)
            return
        key = {"agent": "agents.handback_resume", "expired": "agents.pause_expired"}.get(mode, "agents.resume")
        turn.say(key)
        await _reprompt(turn)

    return {"privacy": cmd_privacy, "forget": cmd_forget, "resume": cmd_resume}


async def _reprompt(turn: Turn) -> None:
    """Show the current step again (its last text and buttons), or the main menu."""
    engine: Any = turn.engine
    fn = getattr(engine, "reprompt", None) or engine._reprompt
    await fn(turn)


async def _after_turn(turn: Turn, db: Any, cid: str) -> None:
    from .desk import conversation_lock

    upto = 0
    try:
        async with conversation_lock(turn.engine, cid):  # held by the turn until it is saved
            await privacy.forget_conversation(db, cid, lock=getattr(turn.engine.store, "tx_lock", None))
            async with db.execute("SELECT COALESCE(MAX(id), 0) FROM messages") as cur:
                row = await cur.fetchone()
            upto = int(row[0]) if row else 0
    except Exception:
        log.exception("forget: the second pass for %s failed", cid)
    finally:
        privacy.notify_forgotten(cid, upto)


async def wait_cleanups(timeout: float = 5.0) -> None:
    """Wait for pending /forget second passes (tests, shutdown)."""
    if _CLEANUPS:
        await asyncio.wait_for(asyncio.gather(*list(_CLEANUPS), return_exceptions=True), timeout)
