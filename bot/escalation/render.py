"""Turns a stored quote request into what people read: the chat summary's values, the lab's
e-mail (plain text + HTML + JSON + photos) and the lab-chat summary.

Pure functions over ``QuoteRecord`` and ``Content`` (every word comes from
content/en/quote.yaml). User input is HTML-escaped in the HTML body, and every header value
passes through ``header_text`` (control characters, CR and LF folded to spaces) before the
strict e-mail policy sees it, so no answer can add a header.
"""

from __future__ import annotations

import html
import json
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from bot.core.content import Content, CostRow
from bot.core.values import email_ascii

from .ports import PhotoPart, QuoteRecord

DAMAGE_IDS = ("software", "port", "water", "logic_board", "reset", "other")
DATA_IDS = ("photos", "messages", "contacts", "notes", "documents", "health", "apps", "other")
BACKUP_IDS = ("icloud", "computer", "none")
PASSCODE_IDS = ("yes", "no", "unsure")

# The lab's mail server must take the whole message: photos beyond this budget are listed
# in the e-mail but not attached (most servers refuse messages over 25 MB after encoding).
MAIL_ATTACHMENT_BUDGET = 15 * 1024 * 1024

SMTP_POLICY = policy.SMTP.clone(raise_on_defect=True)


# -- small helpers ---------------------------------------------------------------------------
def header_text(value: str, limit: int = 200) -> str:
    """One safe header line: control and line-separator characters become spaces, cut at limit."""
    out = []
    for ch in value or "":
        cat = unicodedata.category(ch)
        out.append(" " if cat.startswith("C") or cat in ("Zl", "Zp") else ch)
    text = " ".join("".join(out).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def one_line(value: str) -> str:
    """A value on one line whatever it contains (no fake fields in the plain-text body)."""
    return header_text(value, 100_000)


def plain(text: str) -> str:
    """Our own ``**bold**`` markup dropped (for e-mail and logs)."""
    return text.replace("**", "")


def shown(value: str, limit: int = 200) -> str:
    """A user value inside a chat message: one line, cut, and unable to open **bold**."""
    text = " ".join((value or "").split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text.replace("**", "*\u200b*")


def _label(content: Content, key: str, fallback: str) -> str:
    return content.raw(key) if content.has(key) else fallback


def cost_row(content: Content, damage: str) -> CostRow | None:
    for row in content.facts.costs:
        if row.id == damage:
            return row
    return None


def cost_label(content: Content, row: CostRow) -> str:
    return _label(content, f"facts.damage.{row.id}", row.id)


def field_labels(
    content: Content,
    *,
    damage: str,
    passcode: str,
    passcode_go_on: bool,
    data: Sequence[str],
    backup: str,
    for_lab: bool = False,
) -> dict[str, str]:
    """Display labels (plain) for the button answers of a request (the user's or the lab's view)."""
    pc = _label(content, f"quote.passcode.{passcode}", passcode) if passcode else ""
    if pc and passcode in ("no", "unsure") and passcode_go_on and not for_lab:
        pc = content.text("quote.value.passcode_no_go_on", {"label": pc})
    return {
        "damage": _label(content, f"quote.damage.{damage}", damage) if damage else "",
        "passcode": pc,
        "data": ", ".join(_label(content, f"quote.data.{d}", d) for d in data if d),
        "backup": _label(content, f"quote.backup.{backup}", backup) if backup else "",
    }


def lab_labels(rec: QuoteRecord, content: Content, *, for_lab: bool = True) -> dict[str, str]:
    """``field_labels`` of a stored request."""
    f = rec.fields
    return field_labels(content, damage=f.damage, passcode=f.passcode, passcode_go_on=f.passcode_go_on,
                        data=f.data, backup=f.backup, for_lab=for_lab)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


# -- the lab's view ------------------------------------------------------------------------
def request_dict(rec: QuoteRecord, content: Content) -> dict[str, object]:
    """The structured request (the JSON attachment)."""
    f = rec.fields
    labels = lab_labels(rec, content)
    row = cost_row(content, f.damage)
    return {
        "reference": rec.ref,
        "created_at": datetime.fromtimestamp(rec.created_at, tz=UTC).isoformat(),
        "conversation_id": rec.conversation_id,
        "device_model": f.device,
        "damage": {"id": f.damage, "label": labels["damage"]},
        "description": f.description or None,
        "passcode_known": f.passcode,
        "passcode_warning_acknowledged": f.passcode_go_on,
        "data_wanted": [{"id": d, "label": _label(content, f"quote.data.{d}", d)} for d in f.data],
        "backup": {"id": f.backup, "label": labels["backup"]},
        "name": f.name,
        "email": f.email or None,
        "phone": f.phone or None,
        "photos": len(f.photos),
        "consent": {
            "contact": True,
            "processing": True,
            "given_at": datetime.fromtimestamp(f.consent_at, tz=UTC).isoformat(),
        },
        "price_band": (
            {"label": cost_label(content, row), "price": row.price, "duration": row.days}
            if row
            else None
        ),
        "terms": {"no_data_no_fee": True, "diagnosis_first": True},
        "transcript": [
            {
                "ts": datetime.fromtimestamp(t.ts, tz=UTC).isoformat(),
                "who": t.direction,
                "kind": t.kind,
                "text": t.text,
            }
            for t in rec.transcript
        ],
    }


def field_rows(rec: QuoteRecord, content: Content) -> list[tuple[str, str]]:
    """(label, value) rows of every field, plain text, for both e-mail bodies."""
    f = rec.fields
    labels = lab_labels(rec, content)
    none = content.raw("quote.mail.no_contact")
    row = cost_row(content, f.damage)
    price = (
        content.text(
            "quote.mail.price_value",
            {"price": row.price, "days": row.days, "label": cost_label(content, row)},
        )
        if row
        else content.raw("quote.mail.price_none")
    )
    L = lambda k: content.raw(f"quote.field.{k}")  # noqa: E731
    rows: list[tuple[str, str]] = [
        (L("reference"), rec.ref),
        (L("received"), _when(rec.created_at)),
        (L("device"), f.device),
        (L("damage"), labels["damage"]),
        *([(L("description"), f.description)] if f.description else []),
        (L("passcode"), labels["passcode"]),
        (L("data"), labels["data"]),
        (L("backup"), labels["backup"]),
        (L("name"), f.name),
        (L("email"), f.email or none),
        (L("phone"), f.phone or none),
        (L("photos"), str(len(f.photos))),
        (L("consent"), content.text("quote.mail.consent_value", {"when": _when(f.consent_at)})),
        (L("price"), price),
    ]
    return [(k, one_line(v)) for k, v in rows]


def _photo_notes(content: Content, photos: Sequence[PhotoPart]) -> list[str]:
    keys = {
        "fetched": "quote.mail.photo_attached",
        "too_big": "quote.mail.photo_too_big",
        "unavailable": "quote.mail.photo_unavailable",
        "pending": "quote.mail.photo_no_fetcher",
        "over_budget": "quote.mail.photo_over_budget",
    }
    return [
        content.text(keys.get(p.status, "quote.mail.photo_unavailable"), {"n": str(p.position)})
        for p in photos
    ]


def _who(content: Content, direction: str) -> str:
    return _label(content, f"quote.mail.who.{direction}", direction)


def intro(rec: QuoteRecord, content: Content) -> str:
    """Who asks and how to answer them: "reply to this e-mail" only when a reply reaches them."""
    f = rec.fields
    if reply_to(rec) is not None:
        how = content.raw("quote.mail.answer_reply")
    elif f.email:  # an address that cannot go into a header (non-ASCII before the @)
        how = content.text("quote.mail.answer_address", {"email": one_line(f.email)})
    else:
        how = content.text("quote.mail.answer_phone", {"phone": f.phone})
    return plain(content.raw("quote.mail.intro") + " " + how)


def text_body(
    rec: QuoteRecord, content: Content, photos: Sequence[PhotoPart], json_name: str
) -> str:
    out = [
        plain(content.text("quote.mail.heading", {"ref": rec.ref})),
        "",
        intro(rec, content),
        "",
    ]
    rows = field_rows(rec, content)
    width = max(len(k) for k, _ in rows) + 1
    for k, v in rows:
        out.append(f"{(k + ':').ljust(width)} {v}")
    out.append("")
    if rec.fields.passcode in ("no", "unsure") and rec.fields.passcode_go_on:
        out += [plain(content.raw("quote.mail.passcode_note")), ""]
    out += [plain(content.raw("quote.mail.terms")), ""]
    if photos:
        out.append(plain(content.raw("quote.mail.photos_heading")))
        out += [f"  {n}" for n in _photo_notes(content, photos)]
        out.append("")
    out += [plain(content.text("quote.mail.attachment_note", {"file": json_name})), ""]
    out.append(plain(content.raw("quote.mail.transcript_heading")))
    out.append("-" * 60)
    for t in rec.transcript:
        text = plain(t.text).replace("\r", "").split("\n")
        out.append(f"[{_when(t.ts)[11:16]}] {_who(content, t.direction)}: {text[0]}")
        out += [f"    {line}" for line in text[1:]]
    return "\n".join(out) + "\n"


def html_body(
    rec: QuoteRecord, content: Content, photos: Sequence[PhotoPart], json_name: str
) -> str:
    e = lambda s: html.escape(s, quote=True)  # noqa: E731
    parts = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8"></head>',
        '<body style="font-family:Helvetica,Arial,sans-serif;font-size:14px;color:#222">',
        f"<h2>{e(plain(content.text('quote.mail.heading', {'ref': rec.ref})))}</h2>",
        f"<p>{e(intro(rec, content))}</p>",
        '<table cellpadding="4" style="border-collapse:collapse">',
    ]
    for k, v in field_rows(rec, content):
        parts.append(f'<tr><th align="left" valign="top">{e(k)}</th><td>{e(v)}</td></tr>')
    parts.append("</table>")
    if rec.fields.passcode in ("no", "unsure") and rec.fields.passcode_go_on:
        parts.append(f"<p>{e(plain(content.raw('quote.mail.passcode_note')))}</p>")
    parts.append(f"<p><b>{e(plain(content.raw('quote.mail.terms')))}</b></p>")
    if photos:
        parts.append(f"<h3>{e(plain(content.raw('quote.mail.photos_heading')))}</h3><ul>")
        parts += [f"<li>{e(n)}</li>" for n in _photo_notes(content, photos)]
        parts.append("</ul>")
    parts.append(
        f"<p>{e(plain(content.text('quote.mail.attachment_note', {'file': json_name})))}</p>"
    )
    parts.append(f"<h3>{e(plain(content.raw('quote.mail.transcript_heading')))}</h3>")
    parts.append('<table cellpadding="3" style="border-collapse:collapse;font-size:13px">')
    for t in rec.transcript:
        text = "<br>".join(e(line) for line in plain(t.text).replace("\r", "").split("\n"))
        parts.append(
            f'<tr><td valign="top" style="color:#888">{e(_when(t.ts)[11:16])}</td>'
            f'<td valign="top"><b>{e(_who(content, t.direction))}</b></td><td>{text}</td></tr>'
        )
    parts.append("</table></body></html>")
    return "\n".join(parts) + "\n"


def subject(rec: QuoteRecord, content: Content) -> str:
    f = rec.fields
    labels = lab_labels(rec, content, for_lab=False)
    return header_text(
        content.text(
            "quote.mail.subject",
            {
                "ref": rec.ref,
                "damage": header_text(labels["damage"], 40),
                "device": header_text(f.device, 60),
            },
        ),
        200,
    )


def reply_to(rec: QuoteRecord) -> Address | None:
    """The user as Reply-To (the domain in its ASCII form), or None without a usable address."""
    addr = email_ascii(header_text(rec.fields.email, 254)) if rec.fields.email else None
    if not addr:
        return None
    local, _, domain = addr.partition("@")
    try:
        return Address(display_name=header_text(rec.fields.name, 80), username=local, domain=domain)
    except (ValueError, IndexError):
        return None


def build_email(
    rec: QuoteRecord,
    content: Content,
    *,
    message_id: str,
    mail_from: str,
    to: Sequence[str],
    photos: Sequence[PhotoPart] = (),
) -> EmailMessage:
    """The message for the lab's inbox. ``photos`` carry their bytes when status is 'fetched'."""
    json_name = f"quote-{rec.ref}.json"
    msg = EmailMessage(policy=SMTP_POLICY)
    sender_local, _, sender_domain = header_text(mail_from, 254).partition("@")
    msg["From"] = Address(
        display_name=header_text(content.raw("quote.mail.from_name"), 80),
        username=sender_local,
        domain=sender_domain,
    )
    msg["To"] = ", ".join(header_text(a, 254) for a in to)
    rt = reply_to(rec)
    if rt is not None:
        msg["Reply-To"] = rt
    msg["Subject"] = subject(rec, content)
    msg["Date"] = format_datetime(datetime.fromtimestamp(rec.created_at, tz=UTC))
    msg["Message-ID"] = header_text(message_id, 250)
    msg["X-Quote-Reference"] = rec.ref
    msg.set_content(text_body(rec, content, photos, json_name), cte="quoted-printable")
    msg.add_alternative(
        html_body(rec, content, photos, json_name), subtype="html", cte="quoted-printable"
    )
    data = json.dumps(request_dict(rec, content), ensure_ascii=False, indent=2).encode("utf-8")
    msg.add_attachment(data, maintype="application", subtype="json", filename=json_name)
    for p in photos:
        if p.status == "fetched" and p.data:
            maintype, _, subtype = (p.mime or "image/jpeg").partition("/")
            ext = {"jpeg": "jpg"}.get(subtype, subtype) or "bin"
            msg.add_attachment(
                p.data,
                maintype=maintype or "image",
                subtype=subtype or "jpeg",
                filename=f"{rec.ref}-photo-{p.position}.{header_text(ext, 8)}",
            )
    return msg


def lab_chat_text(rec: QuoteRecord, content: Content) -> str:
    f = rec.fields
    labels = lab_labels(rec, content)
    row = cost_row(content, f.damage)
    price = (
        content.text(
            "quote.mail.price_value",
            {"price": row.price, "days": row.days, "label": cost_label(content, row)},
        )
        if row
        else content.raw("quote.mail.price_none")
    )
    contact = ", ".join(x for x in (f.email, f.phone) if x)
    damage = labels["damage"]
    if f.description:
        damage = content.text("quote.value.damage_described",
                              {"label": damage, "description": shown(f.description, 200)})
    values: Mapping[str, str] = {
        "ref": rec.ref,
        "damage": damage,
        "device": shown(f.device, 120),
        "passcode": labels["passcode"],
        "backup": labels["backup"],
        "data": labels["data"],
        "name": shown(f.name, 80),
        "contact": contact,
        "price": price,
    }
    return content.text("quote.mail.lab_chat", dict(values))
