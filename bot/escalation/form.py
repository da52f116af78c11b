"""The quote form's actions and commands: what flows/quote.yaml calls (``do:``) and /quote,
/status. The quote feature (``service.Escalation``) hands them to the engine; the engine never
imports this.

All answers live in the conversation's values under ``q_`` (one form per conversation).
``quote_next`` is the router every answer returns to: it sends the user to the first
question still open — so a new form runs in order, a resumed one continues where it
stopped, and an edited answer goes straight back to the summary. It also checks the typed
answers the engine cannot judge alone: a device model that is no model ("yes", "?"), a
description that says nothing, a national phone number (completed with DEFAULT_REGION).

What the troubleshooting already established is not asked again: a new form starts from
the flow values ``damage_kind``, ``backup_state`` and ``data_at_risk`` the troubleshooting
flows set (flows/README.md, "Values the quote form reads") and says so; the summary lets
the user change them.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from bot.core.actions import ActionContext, ActionFn, ActionResult
from bot.core.content import Content
from bot.core.engine import CommandFn, Turn
from bot.core.flows import MENU
from bot.core.values import parse_phone
from bot.store import StoreError

from .ports import QuoteFields
from .render import (
    BACKUP_IDS,
    DAMAGE_IDS,
    DATA_IDS,
    PASSCODE_IDS,
    cost_label,
    cost_row,
    field_labels,
    shown,
)

if TYPE_CHECKING:
    from .service import Escalation

log = logging.getLogger(__name__)

FLOW = "quote"
MAX_PHOTOS = 10
QUESTIONS = 10  # device, damage, passcode, data, backup, name, e-mail, phone, photos, consent
NEEDS_DESCRIPTION = ("reset", "other")  # the lab cannot act on these without a few words more
FORM_KEYS = (
    "q_device",
    "q_damage",
    "q_description",
    "q_passcode",
    "q_passcode_ok",
    "q_data",
    "q_backup",
    "q_name",
    "q_email",
    "q_email_skip",
    "q_phone",
    "q_phone_skip",
    "q_photos",
    "q_photos_done",
    "q_photos_note",
    "q_consent",
    "q_consent_at",
    "q_prefilled",
)
SHOW_KEYS = (
    "q_show_device",
    "q_show_damage",
    "q_show_passcode",
    "q_show_data",
    "q_show_backup",
    "q_show_name",
    "q_show_email",
    "q_show_phone",
    "q_show_photos",
    "q_show_price",
)
ROUTES = (
    "device",
    "device_again",
    "damage",
    "description",
    "description_again",
    "passcode",
    "passcode_warn",
    "data",
    "backup",
    "name",
    "email",
    "phone",
    "phone_again",
    "contact_missing",
    "photos",
    "consent",
    "summary",
)

def _result(
    branch: str, pairs: Mapping[str, str] | None = None, events: tuple[str, ...] = ()
) -> ActionResult:
    return ActionResult(branch, tuple((pairs or {}).items()), events)


def _cleared() -> dict[str, str]:
    return {k: "" for k in FORM_KEYS + SHOW_KEYS}


def _list(value: str | None, allowed: tuple[str, ...] | None = None) -> list[str]:
    items = [x for x in (value or "").split(",") if x]
    return [x for x in items if x in allowed] if allowed else items


def _needs_description(v: Mapping[str, str]) -> bool:
    return v.get("q_damage") in NEEDS_DESCRIPTION


def total_questions(v: Mapping[str, str]) -> int:
    return QUESTIONS + (1 if _needs_description(v) else 0)


def answered(v: Mapping[str, str]) -> int:
    """How many of the questions have an answer (for the resume offer)."""
    return sum(
        [
            bool(v.get("q_device")),
            v.get("q_damage") in DAMAGE_IDS,
            _needs_description(v) and bool(v.get("q_description")),
            v.get("q_passcode") in PASSCODE_IDS,
            bool(_list(v.get("q_data"), DATA_IDS)),
            v.get("q_backup") in BACKUP_IDS,
            bool(v.get("q_name")),
            bool(v.get("q_email")) or v.get("q_email_skip") == "1",
            bool(v.get("q_phone")) or v.get("q_phone_skip") == "1",
            v.get("q_photos_done") == "1",
            v.get("q_consent") == "yes",
        ]
    )


def next_missing(v: Mapping[str, str]) -> str:
    """The first question without a valid answer, or 'summary' when the form is complete."""
    if not v.get("q_device"):
        return "device"
    if v.get("q_damage") not in DAMAGE_IDS:
        return "damage"
    if _needs_description(v) and not v.get("q_description"):
        return "description"
    if v.get("q_passcode") not in PASSCODE_IDS:
        return "passcode"
    if v.get("q_passcode") != "yes" and v.get("q_passcode_ok") != "1":
        return "passcode_warn"
    if not _list(v.get("q_data"), DATA_IDS):
        return "data"
    if v.get("q_backup") not in BACKUP_IDS:
        return "backup"
    if not v.get("q_name"):
        return "name"
    if not v.get("q_email") and v.get("q_email_skip") != "1":
        return "email"
    if not v.get("q_phone") and v.get("q_phone_skip") != "1":
        return "phone"
    if not v.get("q_email") and not v.get("q_phone"):
        return "contact_missing"
    if v.get("q_photos_done") != "1":
        return "photos"
    if v.get("q_consent") != "yes":
        return "consent"
    return "summary"


_WORDS_RE = re.compile(r"[^\w]+")


def says_something(text: str, non_answers: tuple[str, ...]) -> bool:
    """Whether a typed answer carries information: not "yes", "ok", "?" or another of
    ``non_answers`` (content: quote.non_answers and the engine's yes/no words), and not a
    bare question ("which one?") without a number or the word iPhone in it."""
    norm = " ".join(_WORDS_RE.sub(" ", text.lower().replace("'", "").replace("\u2019", "")).split())
    if not norm or norm in non_answers:
        return False
    return not (text.strip().endswith("?") and not re.search(r"\d|iphone", norm))


def _non_answers(content: Content) -> tuple[str, ...]:
    return (
        content.words("quote.non_answers")
        + content.words("engine.yes_words")
        + content.words("engine.no_words")
    )


def checked(v: Mapping[str, str], content: Content, region: str) -> tuple[dict[str, str], str | None]:
    """The typed answers the engine could not judge: (values to set, route to re-ask or None).

    A device or description that says nothing is cleared and asked again; a national phone
    number is completed with ``region`` (DEFAULT_REGION) to E.164, or cleared and asked again.
    """
    fix: dict[str, str] = {}
    if v.get("q_device") and not says_something(v["q_device"], _non_answers(content)):
        return {"q_device": ""}, "device_again"
    desc = v.get("q_description", "")
    if desc and _needs_description(v) and not says_something(desc, _non_answers(content)):
        return {"q_description": ""}, "description_again"
    phone = v.get("q_phone", "")
    if phone and not phone.startswith("+"):
        e164 = parse_phone(phone, region)
        if e164 is None:
            return {"q_phone": ""}, "phone_again"
        fix["q_phone"] = e164
    return fix, None


# The flow values the troubleshooting flows set when they have established a fact
# (flows/README.md): damage_kind -> q_damage, backup_state -> q_backup, and data_at_risk ->
# q_data when it names the kinds of data ("photos,messages"; a plain "yes" names none).
KNOWN = (("damage_kind", "q_damage", DAMAGE_IDS), ("backup_state", "q_backup", BACKUP_IDS))


def prefill(v: Mapping[str, str]) -> dict[str, str]:
    """Answers taken from what the conversation already established, for questions still open."""
    out: dict[str, str] = {}
    for known, field, ids in KNOWN:
        if v.get(known) in ids and v.get(field) not in ids:
            out[field] = v[known]
    data = _list(v.get("data_at_risk"), DATA_IDS)
    if data and not _list(v.get("q_data"), DATA_IDS):
        out["q_data"] = ",".join(dict.fromkeys(data))
    return out


def prefill_note(pairs: Mapping[str, str], content: Content) -> str:
    """"What happened: Water damage; Backup: No backup" for the answers ``prefill`` took."""
    labels = field_labels(
        content,
        damage=pairs.get("q_damage", ""),
        passcode="",
        passcode_go_on=False,
        data=_list(pairs.get("q_data"), DATA_IDS),
        backup=pairs.get("q_backup", ""),
    )
    parts = [
        f"{content.raw(f'quote.field.{name}')}: {labels[name]}"
        for name, key in (("damage", "q_damage"), ("data", "q_data"), ("backup", "q_backup"))
        if pairs.get(key)
    ]
    return "; ".join(parts)


def fields_from_values(v: Mapping[str, str], now: float) -> QuoteFields:
    return QuoteFields(
        device=v.get("q_device", ""),
        damage=v.get("q_damage", ""),
        passcode=v.get("q_passcode", ""),
        passcode_go_on=v.get("q_passcode_ok") == "1",
        data=tuple(_list(v.get("q_data"), DATA_IDS)),
        backup=v.get("q_backup", ""),
        name=v.get("q_name", ""),
        email=v.get("q_email", ""),
        phone=v.get("q_phone", ""),
        photos=tuple(_list(v.get("q_photos"))[:MAX_PHOTOS]),
        consent_at=float(v.get("q_consent_at") or now),
        description=v.get("q_description", "") if _needs_description(v) else "",
    )


def summary_values(v: Mapping[str, str], content: Content) -> dict[str, str]:
    """The q_show_* values the summary text (quote.summary) shows."""
    data = _list(v.get("q_data"), DATA_IDS)
    labels = field_labels(
        content,
        damage=v.get("q_damage", ""),
        passcode=v.get("q_passcode", ""),
        passcode_go_on=v.get("q_passcode_ok") == "1",
        data=data,
        backup=v.get("q_backup", ""),
    )
    none = content.raw("quote.value.not_given")
    photos = _list(v.get("q_photos"))
    row = cost_row(content, v.get("q_damage", ""))
    price = (
        content.text(
            "quote.price_known",
            {"label": cost_label(content, row), "price": row.price, "days": row.days},
        )
        if row
        else content.text("quote.price_unknown")
    )
    damage = shown(labels["damage"])
    if _needs_description(v) and v.get("q_description"):
        damage = content.text("quote.value.damage_described",
                              {"label": damage, "description": shown(v["q_description"], 200)})
    return {
        "q_show_device": shown(v.get("q_device", "")),
        "q_show_damage": damage,
        "q_show_passcode": labels["passcode"],
        "q_show_data": labels["data"],
        "q_show_backup": labels["backup"],
        "q_show_name": shown(v.get("q_name", ""), 100),
        "q_show_email": shown(v.get("q_email", "")) or none,
        "q_show_phone": v.get("q_phone", "") or none,
        "q_show_photos": (
            content.text("quote.value.photos", {"n": str(len(photos))})
            if photos
            else content.raw("quote.value.no_photos")
        ),
        "q_show_price": price,
    }


def make_actions(hub: Escalation) -> dict[str, tuple[ActionFn, tuple[str, ...]]]:
    """The quote flow's actions, bound to one store's hub."""

    async def quote_begin(ctx: ActionContext) -> ActionResult:
        n = answered(ctx.values)
        if n == 0:
            known = prefill(ctx.values)
            pairs = {**_cleared(), **known, "q_draft": uuid.uuid4().hex[:12]}
            if known:
                pairs["q_prefilled"] = prefill_note(known, ctx.content)
                return _result("prefilled", pairs)
            return _result("fresh", pairs)
        draft = ctx.values.get("q_draft") or uuid.uuid4().hex[:12]
        known = prefill(ctx.values)  # established since the draft was started
        merged = {**ctx.values, **known}
        return _result(
            "resume",
            {
                **known,
                "q_answered": str(answered(merged)),
                "q_total": str(total_questions(merged)),
                "q_draft": draft,
            },
        )

    async def quote_reset(ctx: ActionContext) -> ActionResult:
        return _result("ok", {**_cleared(), "q_draft": uuid.uuid4().hex[:12]})

    async def quote_next(ctx: ActionContext) -> ActionResult:
        pairs, again = checked(ctx.values, ctx.content, hub.phone_region)
        if again:
            return _result(again, pairs)
        v = {**ctx.values, **pairs}
        route = next_missing(v)
        if not v.get("q_draft"):
            pairs["q_draft"] = uuid.uuid4().hex[:12]
        if v.get("q_consent") == "yes" and not v.get("q_consent_at"):
            pairs["q_consent_at"] = f"{hub.clock():.3f}"
        return _result(route, pairs)

    async def quote_photos_done(ctx: ActionContext) -> ActionResult:
        # photos over Telegram's 20 MB download limit never get here: the engine refuses them
        keep = _list(ctx.values.get("q_photos"))
        notes = []
        if len(keep) > MAX_PHOTOS:
            keep = keep[:MAX_PHOTOS]
            notes.append(ctx.content.text("quote.photos_too_many", {"max": str(MAX_PHOTOS)}))
        pairs = {
            "q_photos": ",".join(keep),
            "q_photos_done": "1",
            "q_photos_note": "\n\n".join(notes),
        }
        return _result("noted" if notes else "ok", pairs)

    async def quote_summary(ctx: ActionContext) -> ActionResult:
        if next_missing(ctx.values) != "summary":
            return _result("incomplete")
        return _result("ok", summary_values(ctx.values, ctx.content))

    async def quote_send(ctx: ActionContext) -> ActionResult:
        v = ctx.values
        if next_missing(v) != "summary":
            return _result("incomplete")
        now = hub.clock()
        fields = fields_from_values(v, now)
        try:
            async with hub.quotes() as qs:
                ref, created = await qs.create_quote(
                    ctx.conversation_id,
                    fields,
                    draft_id=v.get("q_draft", ""),
                    channels=hub.channels,
                    now=now,
                )
        except (sqlite3.Error, StoreError, OSError):
            log.exception("could not store a quote request for %s", ctx.conversation_id)
            return _result("error")
        if created:
            log.info("quote %s stored for %s", ref, ctx.conversation_id)
        hub.kick()
        where = (
            ctx.content.raw("quote.sent_where_maildir")  # never the folder: no server details to users
            if hub.maildir
            else ctx.content.raw("quote.sent_where_mail")
        )
        contact = (
            "quote.sent_contact_both"
            if fields.email and fields.phone
            else "quote.sent_contact_email"
            if fields.email
            else "quote.sent_contact_phone"
        )
        pairs = {
            **_cleared(),
            "q_draft": "",
            "q_ref": ref,
            "q_sent_where": where,
            "q_sent_contact": ctx.content.raw(contact),
            "q_reply_hours": str(hub.reply_hours),
        }
        return _result("sent", pairs, events=("quote_sent",))

    async def quote_discard(ctx: ActionContext) -> ActionResult:
        return _result("ok", {**_cleared(), "q_draft": ""})

    return {
        "quote_begin": (quote_begin, ("fresh", "prefilled", "resume")),
        "quote_reset": (quote_reset, ("ok",)),
        "quote_next": (quote_next, ROUTES),
        "quote_photos_done": (quote_photos_done, ("ok", "noted")),
        "quote_summary": (quote_summary, ("ok", "incomplete")),
        "quote_send": (quote_send, ("sent", "incomplete", "error")),
        "quote_discard": (quote_discard, ("ok",)),
    }


async def _show_current(turn: Turn) -> None:
    """After a command's answer: show the step the user is at again (or the menu)."""
    engine = turn.engine
    ref = turn.state.ref
    if ref and engine.flows.has(ref) and engine.flows.step(ref).waits:
        await engine.goto(turn, ref, remember=False)
    else:
        await engine.goto(turn, MENU, remember=False)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%d %b %Y, %H:%M UTC")


def make_commands(hub: Escalation) -> dict[str, CommandFn]:
    async def cmd_quote(turn: Turn, _arg: str) -> None:
        await turn.engine.start_flow(turn, FLOW)

    async def cmd_status(turn: Turn, _arg: str) -> None:
        conv = turn.state.conversation_id
        try:
            async with hub.quotes() as qs:
                statuses = await qs.statuses_for(conv)
        except (sqlite3.Error, StoreError, OSError):
            log.exception("could not read quote status for %s", conv)
            statuses = []
        for st in statuses:
            key = {"delivered": "quote.status_delivered", "queued": "quote.status_queued"}.get(
                st.status, "quote.status_failed_alerted" if st.alerted else "quote.status_failed"
            )
            turn.say(
                key,
                {
                    "ref": st.ref,
                    "when": _when(st.created_at),
                    "delivered": _when(st.delivered_at) if st.delivered_at else "",
                },
            )
        if answered(turn.state.values):
            turn.say("quote.status_draft")
        elif not statuses:
            turn.say("quote.status_none")
        await _show_current(turn)

    return {"quote": cmd_quote, "status": cmd_status}


__all__ = [
    "make_actions",
    "make_commands",
    "next_missing",
    "answered",
    "FORM_KEYS",
    "fields_from_values",
    "summary_values",
]
