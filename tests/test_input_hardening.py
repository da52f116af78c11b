"""Odd input that used to crash or be misread: Unicode digits on button steps, sizes typed the
way people type them, invalid bytes on the command line, and the outbox CLI's database."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.core.messages import Button, EventKind
from bot.core.values import parse_size_gb
from bot.escalation.ports import QuoteFields
from bot.escalation.store import QuoteStore
from bot.terminal import to_inbound
from tests.support.chat import ChatDriver

ROOT = Path(__file__).resolve().parents[1]


def run_bot(*args: str, stdin: bytes = b"", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "bot", *args], input=stdin, capture_output=True,
                          cwd=ROOT, env=full_env, timeout=60)


# -- Unicode digits on steps with buttons ---------------------------------------------------
@pytest.mark.parametrize("typed", ["²", "①", "¹²", "³", "⑦"])
async def test_unicode_digits_on_a_button_step_get_an_answer_not_a_crash(chat: ChatDriver, typed: str) -> None:
    await chat.command("/start")
    assert chat.last_buttons, "the menu has buttons"
    await chat.say(typed)
    assert chat.replies, "an answer"
    await chat.command("/start quote")
    await chat.say("iPhone 12 mini")
    assert (await chat.state()).step == "ask_damage"
    await chat.say(typed)
    assert chat.replies and (await chat.state()).step == "ask_damage"


async def test_a_button_payload_with_a_unicode_digit_seq_is_stale_not_a_crash(chat: ChatDriver) -> None:
    await chat.command("/start")
    await chat.press_payload("²:storage")
    assert "engine.stale_button" in chat.keys


async def test_plain_and_fullwidth_numbers_still_press_buttons(chat: ChatDriver) -> None:
    await chat.command("/start quote")
    await chat.say("iPhone 12 mini")
    await chat.say("３")  # a fullwidth 3 from a Japanese keyboard: the third button, water
    state = await chat.state()
    assert state.values.get("q_damage") == "water"


def test_the_terminal_reads_a_unicode_digit_as_text_not_a_button() -> None:
    buttons = [Button("1:yes", "Yes"), Button("1:no", "No")]
    assert to_inbound("term:x", "²", buttons).kind is EventKind.TEXT
    assert to_inbound("term:x", "2", buttons).payload == "1:no"


# -- sizes ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("typed", "gb"),
    [
        ("1,000 GB", "1000"),
        ("1 000 GB", "1000"),
        ("1\u202f000 GB", "1000"),
        ("2,000gb", "2000"),
        ("1,5 TB", "1500"),
        ("0,5tb", "500"),
        ("12.5 gb", "12.5"),
        ("its 200gb i think", "200"),
        ("800 mb", "0.8"),
        ("50", "50"),
    ],
)
def test_sizes_as_people_type_them(typed: str, gb: str) -> None:
    assert parse_size_gb(typed) == gb


@pytest.mark.parametrize("typed", ["-5 GB", "−5 GB", "50e3 GB", "1e3gb", "1.000 GB", "0 GB", "1,000,000 TB"])
def test_sizes_that_cannot_be_read_safely_are_asked_again(typed: str) -> None:
    assert parse_size_gb(typed) is None


async def test_a_negative_size_is_asked_again_in_the_conversation(chat: ChatDriver) -> None:
    await chat.say("my icloud storage is full and the backup keeps failing")
    assert (await chat.state()).step == "ask_total"
    await chat.say("-5 GB")
    state = await chat.state()
    assert state.step == "ask_total" and "total_gb" not in {k for k, v in state.values.items() if v}
    assert "storage_full.ask_total_invalid" in chat.keys
    await chat.say("1,000 GB")
    assert (await chat.state()).values["total_gb"] == "1000"


# -- invalid bytes on stdin ------------------------------------------------------------------
BAD = b"icloud is full \xff\xfe and the backup won't run\nhello \xc3\nmy backup is stuck\n"


@pytest.mark.parametrize("env", [{"PYTHONIOENCODING": "utf-8:strict"}, {"LC_ALL": "C", "PYTHONIOENCODING": ""}])
def test_match_reads_invalid_bytes_and_writes_valid_utf8_json_lines(env: dict[str, str]) -> None:
    out = run_bot("match", stdin=BAD, env=env)
    assert out.returncode == 0, out.stderr.decode("utf-8", "replace")
    lines = out.stdout.decode("utf-8").splitlines()  # raises on invalid UTF-8
    assert len(lines) == 3
    assert '"intent": "backup_stuck"' in lines[2]


def test_chat_goes_on_after_an_invalid_byte(tmp_path: Path) -> None:
    out = run_bot("chat", "--db", str(tmp_path / "c.db"), stdin=BAD, env={"PYTHONIOENCODING": "utf-8:strict"})
    assert out.returncode == 0, out.stderr.decode("utf-8", "replace")
    text = out.stdout.decode("utf-8")
    assert text.count("\n\n") >= 3  # an answer for each of the three lines
    assert "Traceback" not in out.stderr.decode("utf-8", "replace")


# -- python -m bot outbox --------------------------------------------------------------------
def test_outbox_with_a_missing_db_fails_naming_it_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    out = run_bot("outbox", "--db", str(missing))
    assert out.returncode == 2
    assert str(missing) in out.stderr.decode()
    assert not missing.exists()
    out = run_bot("outbox", env={"BOT_DB": str(missing)})
    assert out.returncode == 2 and str(missing) in out.stderr.decode() and not missing.exists()


def _fields() -> QuoteFields:
    return QuoteFields(device="iPhone 11", damage="water", passcode="yes", passcode_go_on=False,
                       data=("photos",), backup="none", name="Jo", email="jo@example.com", phone="",
                       photos=(), consent_at=time.time())


async def test_outbox_never_shows_a_next_retry_in_the_past(tmp_path: Path) -> None:
    db = tmp_path / "bot.db"
    qs = await QuoteStore.open(db)
    try:
        await qs.create_quote("term:x", _fields(), draft_id="d1", now=time.time() - 3 * 3600)  # due long ago
        await qs.create_quote("term:y", _fields(), draft_id="d2", now=time.time() + 3600)  # due later
    finally:
        await qs.close()
    out = run_bot("outbox", "--db", str(db))
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    assert "due now" in text
    now = datetime.now(tz=UTC).replace(tzinfo=None)
    shown = [datetime.strptime(m, "%Y-%m-%d %H:%M:%S")
             for m in re.findall(r"next (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", text)]
    assert shown and all(t >= now.replace(microsecond=0) for t in shown), text


async def test_chat_and_outbox_use_the_same_default_database(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    env = {"BOT_DB": str(db), "MAILDIR": str(tmp_path / "maildir")}
    lines = ["/start quote", "iPhone 13 Pro", "water damage", "yes", "Photos and videos", "done", "no backup",
             "Anna Smith", "anna@example.com", "skip", "no photos", "yes", "1"]  # 1: Send
    out = run_bot("chat", stdin=("\n".join(lines) + "\n").encode(), env=env)
    assert out.returncode == 0, out.stderr
    assert b"Q-" in out.stdout
    listed = run_bot("outbox", "--all", env=env)
    assert listed.returncode == 0, listed.stderr
    ref = re.search(rb"Q-[0-9A-Z]{5}", out.stdout)
    assert ref and ref.group(0) in listed.stdout


def test_default_region_and_reply_hours_reach_the_form_from_the_environment(tmp_path: Path) -> None:
    env = {"BOT_DB": str(tmp_path / "bot.db"), "MAILDIR": str(tmp_path / "maildir"),
           "DEFAULT_REGION": "de", "LAB_REPLY_HOURS": "36"}
    lines = ["/start quote", "iphone 11 pro, dark green", "Water damage", "yes", "Messages", "done",
             "iCloud backup", "Jens", "skip", "0151 2345678", "no photos", "yes", "1"]
    out = run_bot("chat", stdin=("\n".join(lines) + "\n").encode(), env=env)
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    assert "+491512345678" in text and "within 36 hours" in text and "by phone" in text
