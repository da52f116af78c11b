"""Agent-facing rendering (pure functions): transcript lines, batches, the Live digest, the
case card and topic names, as Telegram HTML built from content/ texts.

Everything a user typed is escaped; templates come from ``content/<lang>/agents.yaml``
(``**bold**`` is the only markup there, as everywhere in content/). Lengths are counted the
way Telegram counts them (UTF-16 code units of the visible text), and every message built
here stays under ``MAX_VISIBLE``.
"""

from __future__ import annotations

import datetime as dt
import html
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from bot.core.content import Content
from bot.store.conversations import MessageRow

MAX_VISIBLE = 3900  # Telegram allows 4096; keep room for a header
MAX_CAPTION = 1000
TOPIC_NAME_MAX = 128

_BOLD_RE = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
_FIELD_RE = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)}")

PREFIX = {"in": "👤", "out": "🤖", "agent": "🧑‍💼", "note": "📝"}


def tg_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def esc(text: str) -> str:
    return html.escape(text, quote=False)


def one_line(text: str) -> str:
    return " ".join(_BOLD_RE.sub(r"\1", text).split())


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(1, limit - 1)].rstrip() + "…"


class _Keep(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


@dataclass(frozen=True)
class Html:
    """A piece of Telegram HTML and its visible length."""

    html: str
    visible: int

    @staticmethod
    def text(plain: str) -> Html:
        return Html(esc(plain), tg_len(plain))

    def __add__(self, other: Html) -> Html:
        return Html(self.html + other.html, self.visible + other.visible)


NL = Html("\n", 1)


def join(parts: Iterable[Html], sep: Html = NL) -> Html:
    out: Html | None = None
    for p in parts:
        out = p if out is None else out + sep + p
    return out or Html("", 0)


class Texts:
    """Agent-facing texts: a content key rendered to HTML with escaped values."""

    def __init__(self, content: Content) -> None:
        self.content = content

    def has(self, key: str) -> bool:
        return self.content.has(key)

    def plain(self, key: str, **values: str) -> str:
        template = self.content.raw(key)
        return one_line_keep_newlines(string.Formatter().vformat(template, (), _Keep(values)))

    def __call__(self, key: str, **values: str | Html) -> Html:
        """Render ``key``; plain-string values are escaped, ``Html`` values inserted as they are.
        ``**bold**`` may span fields (``**{name}**``)."""
        template = self.content.raw(key)
        parts: list[Html] = []
        pos = 0
        for m in _BOLD_RE.finditer(template):
            parts.append(self._fill(template[pos : m.start()], values))
            parts.append(Html("<b>", 0) + self._fill(m.group(1), values) + Html("</b>", 0))
            pos = m.end()
        parts.append(self._fill(template[pos:], values))
        return join(parts, Html("", 0))

    @staticmethod
    def _fill(fragment: str, values: Mapping[str, str | Html]) -> Html:
        parts: list[Html] = []
        pos = 0
        for m in _FIELD_RE.finditer(fragment):
            parts.append(Html.text(fragment[pos : m.start()]))
            v = values.get(m.group(1))
            if v is None:
                parts.append(Html.text(m.group(0)))
            else:
                parts.append(v if isinstance(v, Html) else Html.text(v))
            pos = m.end()
        parts.append(Html.text(fragment[pos:]))
        return join(parts, Html("", 0))


def one_line_keep_newlines(text: str) -> str:
    return _BOLD_RE.sub(r"\1", text)


def _md(fragment: str) -> Html:
    """A template fragment: escape it, then ``**x**`` -> <b>x</b>."""
    visible = _BOLD_RE.sub(r"\1", fragment)
    return Html(_BOLD_RE.sub(r"<b>\1</b>", esc(fragment)), tg_len(visible))


# -- lines ---------------------------------------------------------------------------------------


def render_line(line: MessageRow, texts: Texts, *, out_limit: int = 300, in_limit: int = 1000) -> Html:
    """One transcript row as a mirror line: who, then what (bot text shortened)."""
    d = line.direction
    if d == "note":
        if line.kind.startswith("escalation:"):
            return Html.text("🚩 " + clip(one_line(line.text), in_limit))
        return Html.text(clip(one_line(line.text), in_limit))
    if d == "out":
        return Html.text(f"{PREFIX['out']} " + clip(one_line(line.text), out_limit))
    body = clip(line.text.strip(), in_limit)
    if line.kind == "button":
        body = f"▸ [{body}]"
    elif line.kind == "media" and not body.startswith("["):
        body = f"[{body}]"
    return Html.text(f"{PREFIX.get(d, '•')} {body}")


def pack(items: Sequence[Html], budget: int = MAX_VISIBLE) -> int:
    """How many of ``items`` (at least one, clipped if need be) fit in one message."""
    used = 0
    for i, item in enumerate(items):
        extra = item.visible + (1 if i else 0)
        if used + extra > budget:
            return max(1, i)
        used += extra
    return len(items)


def fit(item: Html, budget: int = MAX_VISIBLE) -> Html:
    """A single line longer than a message: cut its plain text (only lines are ever this long)."""
    if item.visible <= budget:
        return item
    plain = html.unescape(item.html)
    while tg_len(plain) > budget - 1:
        plain = plain[: int(len(plain) * 0.9)]
    return Html.text(plain + "…")


# -- links and names -----------------------------------------------------------------------------


def topic_link(chat_id: int, thread_id: int) -> str:
    """t.me link to a forum topic of a supergroup (chat ids are -100xxxxxxxxxx)."""
    raw = str(chat_id)
    internal = raw[4:] if raw.startswith("-100") else raw.lstrip("-")
    return f"https://t.me/c/{internal}/{thread_id}"


def link(label: str, url: str) -> Html:
    return Html(f'<a href="{html.escape(url, quote=True)}">{esc(label)}</a>', tg_len(label))


def display_name(user_name: str, texts: Texts) -> str:
    name = " ".join(user_name.split())[:40]
    return name or texts.plain("agents.desk.anonymous")


def topic_name(user_name: str, ref: int, symptom_title: str, texts: Texts) -> str:
    parts = [display_name(user_name, texts), f"#{ref}"]
    if symptom_title:
        parts.append(symptom_title)
    return clip(" · ".join(parts), TOPIC_NAME_MAX)


def hhmm(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%H:%M")


def day_time(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%d %b %H:%M")


# -- the case card -------------------------------------------------------------------------------

STORAGE_KEYS = (
    ("total_gb", "storage_total"),
    ("needed_gb", "storage_needed"),
    ("shortfall_gb", "storage_short"),
)
HIDDEN_VALUES = {
    "trigger_text",
    "pending_text",
    "total_gb",
    "needed_gb",
    "shortfall_gb",
    "plan_name",
    "plan_storage",
    "plan_price",
    # shown on their own line (the satisfaction answer) or internal (bot/agents/desk/queue.py)
    "csat",
    "csat_comment",
    "csat_of",
    "return_to",
    "agent_opens",
}
# the quote form's answers worth showing while it is filled in; every other q_* value is the
# form's own bookkeeping (q_ref, q_sent_where, q_show_*...) — after sending, the card's quote
# line shows the request (reference, device, contact, price band) instead
QUOTE_ANSWERS = frozenset(
    {
        "q_device",
        "q_damage",
        "q_description",
        "q_passcode",
        "q_data",
        "q_backup",
        "q_name",
        "q_email",
        "q_phone",
        "q_photos",
    }
)


def shown_value(key: str) -> bool:
    if key in HIDDEN_VALUES or key.startswith("keep_"):
        return False
    return not key.startswith("q_") or key in QUOTE_ANSWERS


@dataclass(frozen=True)
class CardData:
    ref: int
    conversation_id: str
    user_name: str
    symptom_title: str
    said: str
    step_ref: str
    paused_by: str
    paused_until: float | None
    blocked: bool
    flags: tuple[str, ...]
    steps: tuple[tuple[str, bool], ...]  # (what the step asked, fixed?)
    values: Mapping[str, str]
    quote_state: str
    messages: int
    since: float | None
    owner: str = ""  # the agent who owns the case ("" nobody)
    notes: tuple[str, ...] = ()  # agents' internal notes, newest last
    quote_case: tuple[str, str, str, str] | None = None  # reference, device, contact, price band


def render_card(card: CardData, texts: Texts) -> Html:
    t = texts
    rows: list[Html] = [
        t(
            "agents.desk.card_title",
            name=display_name(card.user_name, t),
            ref=str(card.ref),
            conversation=card.conversation_id,
        )
    ]
    rows.append(
        t(
            "agents.desk.card_problem",
            symptom=card.symptom_title or t.plain("agents.desk.card_no_symptom"),
        )
    )
    if card.said:
        rows.append(t("agents.desk.card_said", said=clip(one_line(card.said), 160)))
    if card.blocked:
        rows.append(t("agents.desk.card_blocked"))
    elif card.paused_until is not None:
        rows.append(t("agents.desk.card_paused", agent=card.paused_by or "?", until=hhmm(card.paused_until)))
    else:
        rows.append(t("agents.desk.card_bot", step=card.step_ref or "-"))
    if card.owner:
        rows.append(t("agents.desk.card_owner", owner=card.owner))
    else:
        rows.append(t("agents.desk.card_no_owner"))
    if card.flags:
        labels = [flag_label(f, t) for f in card.flags]
        rows.append(t("agents.desk.card_flags", flags="🚩 " + " · ".join(labels)))
    if card.steps:
        rows.append(t("agents.desk.card_steps"))
        for what, fixed in card.steps[-12:]:
            rows.append(Html.text(f" {'✅' if fixed else '❌'} {clip(what, 70)}"))
    figures = []
    for key, label in STORAGE_KEYS:
        v = card.values.get(key, "")
        if v:
            figures.append(t.plain(f"agents.desk.{label}", value=v))
    if card.values.get("plan_name"):
        plan = card.values.get("plan_storage") or card.values["plan_name"]
        price = card.values.get("plan_price", "")
        figures.append(t.plain("agents.desk.storage_plan", value=f"{plan} {price}".strip()))
    if figures:
        rows.append(t("agents.desk.card_storage", figures=", ".join(figures)))
    details = []
    for k, v in sorted(card.values.items()):
        if not shown_value(k) or not v:
            continue
        shown = f"{len([x for x in v.split(',') if x])} file(s)" if k.endswith(("photos", "photo_ids")) else v
        details.append(f"{k}: {clip(one_line(shown), 60)}")
    if details:
        rows.append(t("agents.desk.card_details", details=" · ".join(details[:15])))
    if card.quote_case:
        ref, device, contact, price = card.quote_case
        rows.append(
            t(
                "agents.desk.card_quote_case",
                ref=ref,
                device=clip(one_line(device), 60) or "-",
                contact=clip(one_line(contact), 80),
                price=clip(one_line(price), 120),
            )
        )
    if card.quote_state:
        key = f"agents.desk.quote_{card.quote_state}"
        rows.append(t("agents.desk.card_quote", state=t.plain(key) if t.has(key) else card.quote_state))
    if card.notes:
        rows.append(t("agents.desk.card_notes"))
        for note in card.notes[-3:]:
            rows.append(Html.text(" " + clip(one_line(note), 160)))
    rows.append(
        t(
            "agents.desk.card_counts",
            messages=str(card.messages),
            since=day_time(card.since) if card.since else "-",
        )
    )
    return join(rows)


def flag_label(flag: str, texts: Texts) -> str:
    key = f"agents.desk.flag.{flag}"
    return texts.plain(key) if texts.has(key) else flag.replace("_", " ")
