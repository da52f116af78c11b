"""Named actions a flow step can run (``do:``): small pure computations over facts.

Each action reads the conversation's values and the content's facts, returns a branch
name and the values it sets. ``ACTIONS`` maps names to their declared branches so
``python -m bot check`` can verify every flow handles every branch. Doors and later
features add their own actions through ``Engine(extra_actions=...)``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from .content import Content, Plan
from .values import parse_size_gb


@dataclass(frozen=True)
class ActionContext:
    conversation_id: str
    values: Mapping[str, str]
    content: Content


@dataclass(frozen=True)
class ActionResult:
    branch: str
    set: tuple[tuple[str, str], ...] = ()
    events: tuple[str, ...] = ()  # escalation events to raise (e.g. quote_sent)


ActionFn = Callable[[ActionContext], Awaitable[ActionResult]]


def _fmt_gb(gb: float) -> str:
    return f"{gb:.1f}".rstrip("0").rstrip(".")


def _plan_values(plan: Plan) -> tuple[tuple[str, str], ...]:
    return (("plan_name", plan.name), ("plan_storage", plan.storage), ("plan_price", plan.price))


async def recommend_plan(ctx: ActionContext) -> ActionResult:
    """The smallest plan with room for everything in iCloud now plus the backup.

    Reads ``total_gb`` (the plan), ``used_gb`` (all of iCloud in use: photos, Drive, mail,
    every device's backups) and ``needed_gb`` (this iPhone's backup); sets ``required_gb``.
    A plan picked from the backup alone would ignore the rest of iCloud.
    """
    plans = ctx.content.facts.plans
    try:
        total = float(ctx.values.get("total_gb") or "nan")
        used = float(ctx.values.get("used_gb") or "nan")
        needed = float(ctx.values.get("needed_gb") or "nan")
    except ValueError:
        return ActionResult("no_data")
    if needed != needed or used != used:  # NaN: a size is unknown
        return ActionResult("no_data")
    required = used + needed
    req = (("required_gb", _fmt_gb(required)),)
    if total == total and required <= total:
        return ActionResult("fits", req + (("shortfall_gb", "0"),))
    for plan in plans:
        if plan.gb >= required and (total != total or plan.gb > total):
            short = _fmt_gb(required - total) if total == total else _fmt_gb(required)
            return ActionResult("upgrade", req + _plan_values(plan) + (("shortfall_gb", short),))
    return ActionResult("too_big", req + _plan_values(plans[-1]))


async def plan_answer(ctx: ActionContext) -> ActionResult:
    """A direct question about one plan ("how much is the 200 GB plan?")."""
    text = ctx.values.get("trigger_text", "")
    size = parse_size_gb(text) if re.search(r"\d", text) else None
    if size is not None:
        for plan in ctx.content.facts.plans:
            if abs(plan.gb - float(size)) < 0.01:
                return ActionResult("found", _plan_values(plan))
    return ActionResult("none")


# Damage words (content: facts.damage_words.<group>): the four rows of the cost table, plus
# words that say something is wrong without saying what ("won't turn on", "fell", "black
# screen") and a reset. Tried in facts.damage_order; matched on whole words and phrases.
CLEAR_GROUPS = ("water", "port", "software", "logic_board")
UNCLEAR_GROUPS = ("drop", "power")


def _squash(text: str) -> str:
    return " ".join(re.sub(r"[^\w+-]+", " ", text.lower().replace("’", "").replace("'", "")).split())


def _has_phrase(text: str, phrase: str) -> bool:
    words = _squash(phrase).split()
    if not words:
        return False
    pattern = r"(?<![\w-])" + r"\s+".join(re.escape(w) for w in words) + r"(?![\w-])"
    return re.search(pattern, text) is not None


def read_damage(text: str, content: Content) -> str | None:
    """The damage group a message names: a cost-table row, ``drop``, ``power``, ``reset``."""
    squashed = _squash(text)
    if not squashed:
        return None
    groups = [g for g in content.words("facts.damage_order")] or list(CLEAR_GROUPS)
    for group in groups + [g for g in (*UNCLEAR_GROUPS, "reset") if g not in groups]:
        if any(_has_phrase(squashed, w) for w in content.words(f"facts.damage_words.{group}")):
            return group
    return None


def _cost_row(content: Content, kind: str) -> ActionResult:
    row = next(r for r in content.facts.costs if r.id == kind)
    label = content.texts.get(f"facts.damage.{row.id}", row.id)
    return ActionResult("found", (("damage_label", label), ("price_range", row.price), ("duration", row.days),
                                  ("damage_kind", row.id)))


async def cost_answer(ctx: ActionContext) -> ActionResult:
    """The price of one kind of damage: named in the message, or known from the conversation.

    A message that names a row of the cost table wins ("what does water damage cost?");
    then the damage the conversation already established (``damage_kind``); words that
    fit several rows ("won't turn on", "fell") give ``ambiguous``: ask, don't guess.
    """
    rows = {r.id for r in ctx.content.facts.costs}
    group = read_damage(ctx.values.get("trigger_text", "") or "", ctx.content)
    if group in rows:
        return _cost_row(ctx.content, group)
    known = ctx.values.get("damage_kind", "")
    if known in rows:
        return _cost_row(ctx.content, known)
    if group in UNCLEAR_GROUPS:
        return ActionResult("ambiguous")
    return ActionResult("none")


async def damage_route(ctx: ActionContext) -> ActionResult:
    """Which branch of the broken-iPhone flow the opening message already names.

    Also records what that flow establishes: the iPhone is broken (``phone_state``), and
    the kind of damage when the words name one row of the cost table (or a reset).
    """
    broken = (("phone_state", "broken"),)
    group = read_damage(ctx.values.get("trigger_text", "") or "", ctx.content)
    if group is None:
        return ActionResult("none", broken)
    sets = (("damage_kind", group),) if group in (*CLEAR_GROUPS, "reset") else ()
    return ActionResult(group, broken + sets)


async def gate_return(ctx: ActionContext) -> ActionResult:
    """Leave the safe-copy gate for the caller named by ``gate_to`` (see bot/core/flows.py)."""
    return ActionResult(ctx.values.get("gate_to", "") or "lost")


async def backup_state(ctx: ActionContext) -> ActionResult:
    """What the conversation knows about a copy of the data (``backup_state``)."""
    state = ctx.values.get("backup_state", "")
    return ActionResult(state if state in ("icloud", "computer", "none") else "unknown")


async def phone_state(ctx: ActionContext) -> ActionResult:
    """What the conversation knows about the iPhone that holds the data (``phone_state``)."""
    state = ctx.values.get("phone_state", "")
    return ActionResult(state if state in ("works", "broken", "gone") else "unknown")


async def status_checked(ctx: ActionContext) -> ActionResult:
    """Whether Apple's status page was already seen green in this conversation."""
    return ActionResult("yes" if ctx.values.get("status_ok") == "yes" else "no")


async def team_hours(_ctx: ActionContext) -> ActionResult:
    """Is the support team in now? The core knows no hours: always. The agents feature
    replaces this action with its business hours (``BUSINESS_HOURS``, bot/agents/hours.py)."""
    return ActionResult("open")


ACTIONS: dict[str, tuple[ActionFn, tuple[str, ...]]] = {
    "recommend_plan": (recommend_plan, ("fits", "upgrade", "too_big", "no_data")),
    "plan_answer": (plan_answer, ("found", "none")),
    "cost_answer": (cost_answer, ("found", "ambiguous", "none")),
    "damage_route": (damage_route, (*CLEAR_GROUPS, *UNCLEAR_GROUPS, "reset", "none")),
    "gate_return": (gate_return, ("lost", "*")),  # "*": one branch per caller, named in the flow
    "status_checked": (status_checked, ("yes", "no")),
    "phone_state": (phone_state, ("works", "broken", "gone", "unknown")),
    "backup_state": (backup_state, ("icloud", "computer", "none", "unknown")),
    "team_hours": (team_hours, ("open", "closed")),
}
