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
    """The smallest plan that holds the backup (needed_gb) with what is stored now."""
    plans = ctx.content.facts.plans
    try:
        total = float(ctx.values.get("total_gb") or "nan")
        needed = float(ctx.values.get("needed_gb") or "nan")
    except ValueError:
        return ActionResult("no_data")
    if needed != needed:  # NaN: size of the backup unknown
        return ActionResult("no_data")
    if total == total and needed <= total:
        return ActionResult("fits", (("shortfall_gb", "0"),))
    for plan in plans:
        if plan.gb >= needed and (total != total or plan.gb > total):
            short = _fmt_gb(needed - total) if total == total else _fmt_gb(needed)
            return ActionResult("upgrade", _plan_values(plan) + (("shortfall_gb", short),))
    return ActionResult("too_big", _plan_values(plans[-1]))


async def plan_answer(ctx: ActionContext) -> ActionResult:
    """A direct question about one plan ("how much is the 200 GB plan?")."""
    text = ctx.values.get("trigger_text", "")
    size = parse_size_gb(text) if re.search(r"\d", text) else None
    if size is not None:
        for plan in ctx.content.facts.plans:
            if abs(plan.gb - float(size)) < 0.01:
                return ActionResult("found", _plan_values(plan))
    return ActionResult("none")


async def cost_answer(ctx: ActionContext) -> ActionResult:
    """A direct question about one damage type ("what does water damage recovery cost?")."""
    words = (ctx.values.get("trigger_text", "") or "").lower()
    # rows are tried in the content's order (facts.damage_order), so "fell in water, not
    # charging" is priced as water damage, not as a drop or a port
    rows = {r.id: r for r in ctx.content.facts.costs}
    order = [i for i in ctx.content.words("facts.damage_order") if i in rows] or list(rows)
    best = next((rows[i] for i in order
                 if any(re.search(rf"\b{re.escape(w)}", words)
                        for w in ctx.content.words(f"facts.damage_words.{i}"))), None)
    if best is None:
        return ActionResult("none")
    label = ctx.content.texts.get(f"facts.damage.{best.id}", best.id)
    return ActionResult("found", (("damage_label", label), ("price_range", best.price), ("duration", best.days)))


ACTIONS: dict[str, tuple[ActionFn, tuple[str, ...]]] = {
    "recommend_plan": (recommend_plan, ("fits", "upgrade", "too_big", "no_data")),
    "plan_answer": (plan_answer, ("found", "none")),
    "cost_answer": (cost_answer, ("found", "none")),
}
