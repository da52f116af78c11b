"""The quote form through the real engine, content and flows: every re-ask, edit, cancel,
resume, the summary, the stored request, and bad input (long, HTML, injection, emoji)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from bot.config import ConfigError, Settings
from bot.core.content import Content
from bot.core.engine import Engine, TurnRecord
from bot.core.messages import Attachment, EventKind, Inbound
from bot.core.ports import State
from bot.escalation.form import FORM_KEYS, next_missing
from bot.escalation.ports import TELEGRAM_DOWNLOAD_LIMIT, QuoteFields, QuoteRecord
from bot.escalation.reference import ALPHABET, normalize_reference
from bot.escalation.render import SMTP_POLICY, build_email, html_body, lab_chat_text, text_body
from bot.escalation.store import QuoteStore
from bot.features import Features
from bot.runtime import Knowledge
from bot.store import SQLiteStore
from tests.support.chat import ChatDriver
from tests.support.postgres import both_stores

pytestmark = both_stores  # every test on SQLite and on PostgreSQL (tests/support/postgres.py)


def engine_content(chat: ChatDriver) -> Content:
    return chat.engine.content


async def fill(
    chat: ChatDriver,
    *,
    device: str = "iPhone 13 Pro",
    damage: str = "water",
    passcode: str = "yes",
    name: str = "Anna Smith",
    email: str | None = "anna@example.com",
    phone: str | None = "+44 7700 900123",
    consent: bool = True,
    description: str = "reset it to factory settings by accident, the photos of my daughter are gone",
) -> None:
    """Walk the form from the start to the summary."""
    await chat.command("/start quote")
    await chat.say(device)
    await chat.press(damage)
    if damage in ("reset", "other"):
        await chat.say(description)
    await chat.press(passcode)
    if passcode != "yes":
        await chat.press("go_on")
    await chat.press("m_photos")
    await chat.press("m_messages")
    await chat.press("m__done")
    await chat.press("none")
    await chat.say(name)
    if email is None:
        await chat.press("skip")
    else:
        await chat.say(email)
    if phone is None:
        await chat.press("skip")
    else:
        await chat.say(phone)
    await chat.press("done")
    if consent:
        await chat.press("yes")


async def to_contact(chat: ChatDriver, damage: str = "water") -> None:
    """Walk the form up to the e-mail question."""
    await chat.command("/start quote")
    await chat.say("iPhone 13 Pro")
    await chat.press(damage)
    await chat.press("yes")
    await chat.press("m_photos")
    await chat.press("m__done")
    await chat.press("none")
    await chat.say("Lena Graf")
    assert (await chat.state()).step == "ask_email"


async def stored(store: SQLiteStore) -> list[dict[str, object]]:
    qs = await QuoteStore.beside(store)
    try:
        out = []
        for row in await qs.outbox():
            rec = await qs.quote(row.ref)
            assert rec is not None
            out.append(
                {"ref": rec.ref, "fields": rec.fields, "transcript": rec.transcript, "row": row}
            )
        return out
    finally:
        await qs.close()


async def test_summary_shows_every_field_and_the_price_band(chat: ChatDriver) -> None:
    await fill(chat)
    assert chat.keys[-1] == "quote.summary"
    text = chat.text
    for expected in (
        "iPhone 13 Pro",
        "Water damage",
        "Yes, I know it",
        "Photos and videos, Messages",
        "No backup",
        "Anna Smith",
        "anna@example.com",
        "+447700900123",
        "Photos:** none",
        "$400 - $1,000",
        "3 - 7 days",
        "no data, no fee",
        "its own terms",
    ):
        assert expected in text, expected
    assert chat.last_buttons == ["send", "edit", "cancel"]


@pytest.mark.parametrize(
    ("damage", "price", "days"),
    [
        ("software", "$200 - $500", "1 - 3 days"),
        ("port", "$250 - $600", "2 - 5 days"),
        ("water", "$400 - $1,000", "3 - 7 days"),
        ("logic_board", "$600 - $1,800", "5 - 14 days"),
    ],
)
async def test_each_damage_type_maps_to_its_cost_row(
    chat: ChatDriver, damage: str, price: str, days: str
) -> None:
    await fill(chat, damage=damage)
    assert f"{price}, about {days}" in chat.text


@pytest.mark.parametrize("damage", ["reset", "other"])
async def test_cases_without_a_cost_row_say_so_and_show_the_table(
    chat: ChatDriver, damage: str
) -> None:
    await fill(chat, damage=damage)
    assert "no typical price" in chat.text.lower()
    assert "$200 - $500" in chat.text and "$600 - $1,800" in chat.text


async def test_send_stores_request_and_outbox_and_answers_with_a_reference(
    chat: ChatDriver, store: SQLiteStore
) -> None:
    await fill(chat)
    await chat.press("send")
    assert "quote.sent" in chat.keys
    state = await chat.state()
    ref = state.values["q_ref"]
    assert ref.startswith("Q-") and len(ref) == 7
    assert all(c in ALPHABET for c in ref[2:]) and not set(ref[2:]) & set("01OIL")
    assert ref in chat.text and "/status" in chat.text
    assert all(not state.values.get(k) for k in FORM_KEYS)  # the draft is gone once sent
    rows = await stored(store)
    assert len(rows) == 1
    got = rows[0]
    assert got["ref"] == ref
    fields = got["fields"]
    assert fields.device == "iPhone 13 Pro" and fields.damage == "water"  # type: ignore[attr-defined]
    assert fields.data == ("photos", "messages") and fields.phone == "+447700900123"  # type: ignore[attr-defined]
    assert fields.consent_at > 0  # type: ignore[attr-defined]
    assert got["row"].status == "pending" and got["row"].channel == "email"  # type: ignore[attr-defined]
    # the transcript comes from the engine's (redacted) messages table
    texts = [t.text for t in got["transcript"]]  # type: ignore[attr-defined]
    assert "iPhone 13 Pro" in texts and "Anna Smith" in texts


async def test_status_before_during_and_after(chat: ChatDriver) -> None:
    await chat.command("/start")
    await chat.command("/status")
    assert "quote.status_none" in chat.keys
    await chat.command("/start quote")
    await chat.say("iPhone 8")
    await chat.command("/status")
    assert "quote.status_draft" in chat.keys
    assert (await chat.state()).step == "ask_damage"  # the current question comes back
    assert chat.last_buttons[:2] == ["software", "port"]
    await chat.command("/quote")
    await chat.press("over")
    await fill(chat)
    await chat.press("send")
    await chat.command("/status")
    assert "quote.status_queued" in chat.keys and "quote.status_draft" not in chat.keys


async def test_a_second_send_of_the_same_draft_makes_no_second_request(
    chat: ChatDriver, engine: Engine, store: SQLiteStore, features: Features
) -> None:
    await fill(chat)
    summary_buttons = chat.buttons
    await chat.press("send")
    ref = (await chat.state()).values["q_ref"]
    # a double tap on the old "send" is stale and changes nothing
    await chat.press_payload(summary_buttons[0].id)
    assert "engine.stale_button" in chat.keys
    # the send action itself is idempotent per draft (e.g. the turn failed after storing)
    hub = features.quotes
    send, _ = engine.actions["quote_send"]
    from bot.core.actions import ActionContext

    values = {
        "q_device": "x",
        "q_damage": "water",
        "q_passcode": "yes",
        "q_data": "photos",
        "q_backup": "none",
        "q_name": "A",
        "q_email": "a@example.com",
        "q_phone_skip": "1",
        "q_photos_done": "1",
        "q_consent": "yes",
        "q_draft": "same-draft",
    }
    r1 = await send(ActionContext("test:1", values, engine.content))
    r2 = await send(ActionContext("test:1", values, engine.content))
    assert r1.branch == r2.branch == "sent"
    assert dict(r1.set)["q_ref"] == dict(r2.set)["q_ref"] != ref
    assert len(await stored(store)) == 2
    assert engine.actions["quote_send"][0] is send and hub.store is store


async def test_edit_one_field_returns_to_the_summary(chat: ChatDriver) -> None:
    await fill(chat)
    edits = [
        ("device", lambda: chat.say("iPhone 15"), "iPhone 15"),
        ("damage", lambda: chat.press("port"), "Charging port broken"),
        ("backup", lambda: chat.press("icloud"), "iCloud backup"),
        ("name", lambda: chat.say("Bob"), "Bob"),
        ("email", lambda: chat.say("bob@example.org"), "bob@example.org"),
        ("phone", lambda: chat.say("+1 415 555 0100"), "+14155550100"),
    ]
    for field, answer, shown in edits:
        await chat.press("edit")
        assert "quote.edit_which" in chat.keys
        await chat.press(field)
        await answer()
        assert chat.keys[-1] == "quote.summary", (field, chat.keys)
        assert shown in chat.text
    # multi-select: toggle one off, done
    await chat.press("edit")
    await chat.press("data")
    await chat.press("m_messages")
    await chat.press("m__done")
    assert (
        chat.keys[-1] == "quote.summary"
        and "Most important data:** Photos and videos\n" in chat.text
    )
    # passcode: changing to "no" asks for the warning first, then back to the summary
    await chat.press("edit")
    await chat.press("passcode")
    await chat.press("unsure")
    assert "quote.passcode_warn" in chat.keys
    await chat.press("go_on")
    assert chat.keys[-1] == "quote.summary" and "Not sure (you chose to go on)" in chat.text
    # back without a change
    await chat.press("edit")
    await chat.press("back")
    assert chat.keys[-1] == "quote.summary"


async def test_edit_contact_cannot_remove_both(chat: ChatDriver) -> None:
    await fill(chat, phone=None)
    await chat.press("edit")
    await chat.press("email")
    await chat.press("skip")  # no e-mail, and no phone either
    assert "quote.contact_missing" in chat.keys and chat.last_buttons == ["email", "phone"]
    await chat.press("phone")
    await chat.say("+49 151 12345678")
    assert chat.keys[-1] == "quote.summary"
    assert "E-mail:** —" in chat.text and "+4915112345678" in chat.text


async def test_data_needs_at_least_one_choice(chat: ChatDriver) -> None:
    await chat.command("/start quote")
    await chat.say("iPhone 12")
    await chat.press("software")
    await chat.press("yes")
    await chat.press("m__done")
    assert "quote.ask_data_invalid" in chat.keys and (await chat.state()).step == "ask_data"


async def test_consent_is_required_to_send(chat: ChatDriver) -> None:
    await fill(chat, consent=False)
    await chat.press("no")
    assert "quote.consent_needed" in chat.keys
    assert chat.last_buttons == ["yes", "stop"]
    await chat.press("stop")
    assert (await chat.state()).flow == "main_menu"
    await chat.command("/quote")
    await chat.press("continue")
    assert (await chat.state()).step == "ask_consent"
    await chat.press("yes")
    assert chat.keys[-1] == "quote.summary"


async def test_summary_cancel_discards_the_draft(chat: ChatDriver, store: SQLiteStore) -> None:
    await fill(chat)
    await chat.press("cancel")
    assert "quote.discarded" in chat.keys
    assert (await chat.state()).flow == "main_menu"
    await chat.command("/quote")
    assert "quote.resume" not in chat.keys and (await chat.state()).step == "ask_device"
    assert await stored(store) == []


async def test_cancel_mid_form_and_resume_where_stopped(chat: ChatDriver) -> None:
    await chat.command("/start quote")
    await chat.say("iPhone SE")
    await chat.press("water")
    await chat.press("yes")
    await chat.command("/cancel")
    assert "engine.cancelled" in chat.keys and (await chat.state()).flow == "main_menu"
    await chat.command("/quote")
    assert "quote.resume" in chat.keys and "3 of 10" in chat.text
    await chat.press("continue")
    assert (await chat.state()).step == "ask_data"


async def test_back_inside_the_form(chat: ChatDriver) -> None:
    await chat.command("/start quote")
    await chat.say("iPhone SE")
    await chat.press("water")
    await chat.command("/back")
    assert (await chat.state()).step == "ask_damage"
    await chat.press("port")
    assert (await chat.state()).step == "ask_passcode"  # the router continues where it should


async def test_never_asks_for_the_passcode_and_redacts_a_typed_one(
    chat: ChatDriver, store: SQLiteStore
) -> None:
    await chat.command("/start quote")
    assert "passcode" not in chat.text.lower().replace("passcode or passwords", "")
    await chat.say("my passcode is 482913")
    assert "engine.password_warning" in chat.keys
    assert (await chat.state()).step == "ask_device"  # not taken as the device model
    assert "482913" not in json.dumps((await chat.state()).values)
    assert all("482913" not in r[0] for r in await store.database.fetchall("SELECT text FROM messages"))


async def test_very_long_answers_are_cut_with_a_note(chat: ChatDriver) -> None:
    await chat.command("/start quote")
    await chat.say("iPhone " + "x" * 5000)
    assert "engine.truncated" in chat.keys
    device = (await chat.state()).values["q_device"]
    assert len(device) <= 1001 and device.endswith("…")
    await chat.press("water")
    await chat.press("yes")
    await chat.press("m_notes")
    await chat.press("m__done")
    await chat.press("none")
    await chat.say("N" * 5000)
    assert "engine.truncated" in chat.keys
    await chat.say("e" * 5000 + "@example.com")
    assert "quote.ask_email_invalid" in chat.keys
    await chat.say("ok@example.com")
    await chat.press("skip")
    await chat.press("done")
    await chat.press("yes")
    # the summary stays within Telegram's 4096 characters
    assert chat.keys[-1] == "quote.summary" and len(chat.replies[-1].text) < 4096


async def test_html_and_header_injection_in_answers_stay_plain_values(
    chat: ChatDriver, store: SQLiteStore
) -> None:
    await chat.command("/start quote")
    await chat.say("<script>alert(1)</script> iPhone")
    await chat.press("water")
    await chat.press("yes")
    await chat.press("m_photos")
    await chat.press("m__done")
    await chat.press("none")
    await chat.say("Eve\r\nBcc: victim@example.com")
    await chat.say("eve@example.com\nBcc: victim@example.com")
    assert "quote.ask_email_invalid" in chat.keys  # asked again, not stored
    state = await chat.state()
    assert state.step == "ask_email" and not state.values.get("q_email")
    assert "\n" not in state.values["q_name"] and "\r" not in state.values["q_name"]
    await chat.say("eve@example.com")
    await chat.press("skip")
    await chat.press("done")
    await chat.press("yes")
    assert "<script>alert(1)</script> iPhone" in chat.text  # plain text for the doors to escape
    await chat.press("send")
    rec = (await stored(store))[0]
    assert rec["fields"].device.startswith("<script>")  # type: ignore[attr-defined]
    assert rec["fields"].name == "Eve Bcc: victim@example.com"  # type: ignore[attr-defined]
    assert rec["fields"].email == "eve@example.com"  # type: ignore[attr-defined]


async def test_emoji_only_name_is_a_name(chat: ChatDriver) -> None:
    await fill(chat, name="🦊🌸")
    assert "🦊🌸" in chat.text and chat.keys[-1] == "quote.summary"


async def test_photos_are_collected_and_counted(chat: ChatDriver, store: SQLiteStore) -> None:
    await fill(chat, consent=False)
    await chat.press("yes")
    await chat.press("edit")
    await chat.press("photos")
    await chat.send(
        Inbound(
            "test:1",
            EventKind.MEDIA,
            attachments=(
                Attachment("photo", "file-a", 120_000),
                Attachment("photo", "file-b", 90_000),
            ),
        )
    )
    assert "quote.photos_more" in chat.keys
    await chat.say("hello")  # text on the photo step: asked again, not a crash
    await chat.press("done")
    assert chat.keys[-1] == "quote.summary" and "2 attached" in chat.text
    await chat.press("send")
    qs = await QuoteStore.beside(store)
    try:
        ref = (await chat.state()).values["q_ref"]
        assert [a[1] for a in await qs.attachments(ref)] == ["file-a", "file-b"]
    finally:
        await qs.close()


async def test_photos_over_telegrams_download_limit_are_explained(chat: ChatDriver) -> None:
    await fill(chat, consent=False)
    await chat.press("yes")
    await chat.press("edit")
    await chat.press("photos")
    await chat.send(
        Inbound(
            "test:1",
            EventKind.MEDIA,
            attachments=(
                Attachment("photo", "small", 300_000),
                Attachment("photo", "huge", TELEGRAM_DOWNLOAD_LIMIT + 1),
            ),
        )
    )
    assert "engine.photo_too_big" in chat.keys and "20 MB" in chat.text  # told at once
    await chat.press("done")
    assert chat.keys[-1] == "quote.summary" and "1 attached" in chat.text
    assert (await chat.state()).values["q_photos"] == "small"


async def test_photo_skip_clears_photos(chat: ChatDriver) -> None:
    await fill(chat, consent=False)
    await chat.press("yes")
    await chat.press("edit")
    await chat.press("photos")
    await chat.send(
        Inbound("test:1", EventKind.MEDIA, attachments=(Attachment("photo", "p1", 1000),))
    )
    await chat.press("skip")
    assert "Photos:** none" in chat.text


async def test_more_than_ten_photos_keep_the_first_ten(chat: ChatDriver) -> None:
    await fill(chat, consent=False)
    await chat.press("yes")
    await chat.press("edit")
    await chat.press("photos")
    for i in range(12):
        await chat.send(
            Inbound("test:1", EventKind.MEDIA, attachments=(Attachment("photo", f"p{i}", 1000),))
        )
    await chat.press("done")
    assert "first 10 photos" in chat.text and "10 attached" in chat.text


def test_router_order() -> None:
    v: dict[str, str] = {}
    order = []
    answers = [
        ("q_device", "x"),
        ("q_damage", "water"),
        ("q_passcode", "no"),
        ("q_passcode_ok", "1"),
        ("q_data", "photos"),
        ("q_backup", "none"),
        ("q_name", "n"),
        ("q_email_skip", "1"),
        ("q_phone_skip", "1"),
        ("q_phone", "+4915112345678"),
        ("q_photos_done", "1"),
        ("q_consent", "yes"),
    ]
    for key, value in answers:
        order.append(next_missing(v))
        v[key] = value
    order.append(next_missing(v))
    assert order == [
        "device",
        "damage",
        "passcode",
        "passcode_warn",
        "data",
        "backup",
        "name",
        "email",
        "phone",
        "contact_missing",
        "photos",
        "consent",
        "summary",
    ]


def test_references_read_out_on_the_phone() -> None:
    assert normalize_reference("q 7k3m9") == "Q-7K3M9"
    assert normalize_reference("Q-7K3M9") == "Q-7K3M9"
    assert normalize_reference("Q-0O1IL") is None


def test_content_keys_of_the_flow_exist(tmp_path: Path) -> None:
    from bot.features import standard_features
    from bot.runtime import check

    root = Path(__file__).resolve().parents[1]
    knowledge, problems = check(root / "content", root / "flows", "en", standard_features().all)
    mine = [p for p in problems if "quote" in str(p)]
    assert mine == []
    assert knowledge is not None and "quote" in knowledge.flows.flows
    assert knowledge.flows.flow_for_intent("quote_request").id == "quote"  # type: ignore[union-attr]


async def test_typed_answers_work_like_buttons(chat: ChatDriver) -> None:
    await chat.command("/start quote")
    await chat.say("iPhone 7")
    await chat.say("water damage")
    assert (await chat.state()).step == "ask_passcode"
    await chat.say("yes")
    await chat.press("m_health")
    await chat.say("done")
    await chat.say("no backup")
    await chat.say("Kim")
    await chat.say("skip")
    assert (await chat.state()).step == "ask_phone"
    await chat.say("+33 6 12 34 56 78")
    await chat.say("no photos")
    assert (await chat.state()).step == "ask_consent"
    await chat.say("yes")
    assert chat.keys[-1] == "quote.summary" and "+33612345678" in chat.text


async def test_sending_raises_the_quote_sent_event_for_the_agents(chat: ChatDriver, engine: Engine) -> None:
    seen: list[tuple[str, ...]] = []

    async def listener(record: TurnRecord) -> None:
        seen.append(record.events)

    engine.listeners.append(listener)
    await fill(chat)
    assert not any("quote_sent" in ev for ev in seen)
    await chat.press("send")
    assert "quote_sent" in seen[-1]


# -- contact details through phonenumbers and email-validator (issue 10, item 8) -------------
def _record(**kw: object) -> QuoteRecord:
    base: dict[str, object] = dict(
        device="iPhone 12", damage="water", passcode="yes", passcode_go_on=False, data=("photos",),
        backup="none", name="Lena Graf", email="lena@example.com", phone="", photos=(), consent_at=1.7e9,
    )
    base.update(kw)
    return QuoteRecord("Q-ABCDE", "tg:1", 1.7e9, QuoteFields(**base), ())  # type: ignore[arg-type]


async def test_a_phone_number_with_the_trunk_zero_in_brackets_is_stored_right(chat: ChatDriver) -> None:
    await fill(chat, phone="+49 (0)151 2345678")
    assert chat.keys[-1] == "quote.summary"
    assert "+491512345678" in chat.text and "+4901512345678" not in chat.text


async def test_a_national_number_needs_the_default_region(chat: ChatDriver, features: Features) -> None:
    await to_contact(chat)
    await chat.say("lena@example.com")
    await chat.say("0151 2345678")  # no DEFAULT_REGION: asked again, with the country code
    assert (await chat.state()).step == "phone_again" and "quote.ask_phone_invalid" in chat.keys
    features.quotes.phone_region = "DE"
    await chat.say("0151 2345678")
    await chat.press("done")
    await chat.press("yes")
    assert chat.keys[-1] == "quote.summary" and "+491512345678" in chat.text


@pytest.mark.parametrize("typed", ["+49 151", "12345", "0151 2345678 call after 6"])
async def test_numbers_that_cannot_be_called_are_asked_again(
    chat: ChatDriver, features: Features, typed: str
) -> None:
    features.quotes.phone_region = "DE"
    await to_contact(chat)
    await chat.say("lena@example.com")
    await chat.say(typed)
    assert (await chat.state()).step in ("ask_phone", "phone_again")
    assert "quote.ask_phone_invalid" in chat.keys


async def test_an_internationalised_domain_is_an_e_mail_address(chat: ChatDriver) -> None:
    await fill(chat, email="lena@bücher.de")
    assert chat.keys[-1] == "quote.summary" and "lena@bücher.de" in chat.text


async def test_a_trailing_dot_is_not_an_e_mail_address(chat: ChatDriver) -> None:
    await to_contact(chat)
    await chat.say("lena@example.com.")
    assert (await chat.state()).step == "ask_email" and "quote.ask_email_invalid" in chat.keys


def test_the_labs_reply_to_uses_the_ascii_form_of_the_domain(knowledge: Knowledge) -> None:
    msg = build_email(_record(email="lena@bücher.de"), knowledge.content, message_id="<a@b>",
                      mail_from="bot@example.org", to=("lab@example.org",))
    assert [a.addr_spec for a in msg["Reply-To"].addresses] == ["lena@xn--bcher-kva.de"]
    assert all(b < 128 for b in msg.as_bytes(policy=SMTP_POLICY))


def test_default_region_and_reply_hours_are_checked_at_start() -> None:
    s = Settings.from_env({"DEFAULT_REGION": "de", "LAB_REPLY_HOURS": "48"})
    assert (s.default_region, s.lab_reply_hours) == ("DE", 48)
    assert (Settings.from_env({}).default_region, Settings.from_env({}).lab_reply_hours) == ("", 24)
    with pytest.raises(ConfigError, match="DEFAULT_REGION"):
        Settings.from_env({"DEFAULT_REGION": "Germany"})
    with pytest.raises(ConfigError, match="LAB_REPLY_HOURS"):
        Settings.from_env({"LAB_REPLY_HOURS": "0"})


# -- the lab can act on every request (issue 10, item 9) --------------------------------------
@pytest.mark.parametrize("damage", ["reset", "other"])
async def test_reset_and_something_else_ask_for_a_description(
    chat: ChatDriver, store: SQLiteStore, damage: str
) -> None:
    words = "wiped it to sell it, forgot the voice memos from my late dad were only on there"
    await fill(chat, damage=damage, description=words)
    assert chat.keys[-1] == "quote.summary" and words in chat.text
    await chat.press("send")
    [req] = await stored(store)
    assert req["fields"].description == words  # type: ignore[attr-defined]
    rec = QuoteRecord("Q-ABCDE", "tg:1", 1.7e9, req["fields"], ())  # type: ignore[arg-type]
    content = engine_content(chat)
    assert words in text_body(rec, content, (), "q.json")
    assert words in lab_chat_text(rec, content)


async def test_a_description_that_says_nothing_is_asked_again(chat: ChatDriver) -> None:
    await chat.command("/start quote")
    await chat.say("iPhone SE")
    await chat.press("other")
    assert (await chat.state()).step == "ask_description"
    await chat.say("ok")
    assert (await chat.state()).step == "description_again"
    await chat.say("the screen went green and then it wont turn on at all")
    assert (await chat.state()).step == "ask_passcode"


async def test_choosing_water_after_something_else_drops_the_description(chat: ChatDriver) -> None:
    await fill(chat, damage="other", description="it just died overnight while charging")
    await chat.press("edit")
    await chat.press("damage")
    await chat.press("water")
    assert chat.keys[-1] == "quote.summary" and "died overnight" not in chat.text


@pytest.mark.parametrize("typed", ["yes", "?", "ok", "idk", "Yep!", "which one?", "no", "iPhone?"])
async def test_a_non_answer_is_not_a_device_model(chat: ChatDriver, typed: str) -> None:
    await chat.command("/start quote")
    await chat.say(typed)
    state = await chat.state()
    assert state.step == "device_again" and not state.values.get("q_device")
    assert "quote.ask_device_invalid" in chat.keys
    await chat.say("iphone 11, the purple one")
    assert (await chat.state()).step == "ask_damage"


@pytest.mark.parametrize("typed", ["X", "7", "SE 2020", "not sure, the one with 3 cameras", "12 pro max?"])
async def test_short_or_unsure_models_are_still_models(chat: ChatDriver, typed: str) -> None:
    await chat.command("/start quote")
    await chat.say(typed)
    assert (await chat.state()).step == "ask_damage"


async def test_a_re_entered_e_mail_does_not_ask_the_phone_again(chat: ChatDriver) -> None:
    await to_contact(chat)
    await chat.press("skip")
    await chat.press("skip")  # skipped both: "which one?"
    assert chat.keys[-1] == "quote.contact_missing"
    await chat.press("email")
    await chat.say("lena.graf@example.com")
    assert (await chat.state()).step == "ask_photos"
    assert "quote.ask_phone" not in chat.keys


async def test_a_phone_only_request_does_not_tell_the_lab_to_reply_by_mail(knowledge: Knowledge) -> None:
    rec = _record(email="", phone="+491512345678")
    msg = build_email(rec, knowledge.content, message_id="<a@b>", mail_from="bot@example.org",
                      to=("lab@example.org",))
    body = text_body(rec, knowledge.content, (), "q.json")
    assert msg["Reply-To"] is None
    assert "Reply to this e-mail" not in body and "+491512345678" in body.split("\n\n")[1]
    assert "does not reach them" in html_body(rec, knowledge.content, (), "q.json")
    with_mail = text_body(_record(), knowledge.content, (), "q.json")
    assert "Reply to this e-mail" in with_mail


async def test_what_happens_next_says_when_the_lab_answers(chat: ChatDriver, features: Features) -> None:
    await fill(chat)
    await chat.press("send")
    assert "within 24 hours" in chat.text.replace("**", "")
    features.quotes.reply_hours = 48
    await fill(chat, device="iPhone 8")
    await chat.press("send")
    assert "within 48 hours" in chat.text.replace("**", "")


# -- what the troubleshooting established is not asked again (issue 15, item 5) ---------------
async def _established(store: SQLiteStore, **values: str) -> None:
    await store.save_turn(State("test:1", flow="main_menu", step="start", values=values), [])


async def test_the_form_starts_from_what_the_troubleshooting_established(
    chat: ChatDriver, store: SQLiteStore
) -> None:
    await _established(store, damage_kind="water", backup_state="none", data_at_risk="photos,messages")
    await chat.command("/quote")
    assert chat.keys[:2] == ["quote.intro", "quote.prefilled"]
    assert "Water damage" in chat.text and "No backup" in chat.text and "Photos and videos" in chat.text
    await chat.say("iPhone 13 mini")
    assert (await chat.state()).step == "ask_passcode"  # not "what happened?"
    await chat.press("yes")
    assert (await chat.state()).step == "ask_name"  # neither the data nor the backup
    await chat.say("Lena")
    await chat.say("lena@example.com")
    await chat.press("skip")
    await chat.press("done")
    await chat.press("yes")
    assert chat.keys[-1] == "quote.summary"
    assert "Water damage" in chat.text and "No backup" in chat.text and "Photos and videos, Messages" in chat.text
    await chat.press("edit")  # and it can still be changed
    await chat.press("backup")
    await chat.press("computer")
    assert chat.keys[-1] == "quote.summary" and "On a computer" in chat.text


async def test_unknown_established_values_are_asked_as_usual(chat: ChatDriver, store: SQLiteStore) -> None:
    await _established(store, damage_kind="drop", backup_state="maybe", data_at_risk="yes")
    await chat.command("/quote")
    assert "quote.prefilled" not in chat.keys
    await chat.say("iPhone 13 mini")
    assert (await chat.state()).step == "ask_damage"


async def test_a_resumed_form_takes_what_was_established_since(chat: ChatDriver, store: SQLiteStore) -> None:
    await chat.command("/start quote")
    await chat.say("iPhone 14")
    await chat.command("/cancel")
    state = await chat.state()
    await store.save_turn(replace(state, values={**state.values, "damage_kind": "logic_board"}), [])
    await chat.command("/quote")
    assert "2 of 10" in chat.text
    await chat.press("continue")
    assert (await chat.state()).step == "ask_passcode"
