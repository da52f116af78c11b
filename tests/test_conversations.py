"""Runs the conversation scripts in tests/conversations/*.yaml against the engine.

Each script is a list of turns (say / press / command) with expectations on the replies
(substrings, content keys, offered buttons) and on the state after the turn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.chat import ChatDriver
from tests.support.postgres import both_stores

pytestmark = both_stores  # every test on SQLite and on PostgreSQL (tests/support/postgres.py)

SCRIPTS = sorted((Path(__file__).parent / "conversations").glob("*.yaml"))


def _load(path: Path) -> list[tuple[str, dict[str, Any]]]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    docs = data if isinstance(data, list) else [data]
    return [(f"{path.stem}: {d.get('name', i)}", d) for i, d in enumerate(docs)]


CASES = [case for path in SCRIPTS for case in _load(path)]


def test_scripts_exist() -> None:
    assert len(CASES) >= 20, "every flow needs conversation scripts"


@pytest.mark.parametrize("script", [c[1] for c in CASES], ids=[c[0] for c in CASES])
async def test_conversation(chat: ChatDriver, script: dict[str, Any]) -> None:
    for n, turn in enumerate(script["conversation"], 1):
        if "say" in turn:
            await chat.say(str(turn["say"]))
        elif "press" in turn:
            await chat.press(str(turn["press"]))
        elif "command" in turn:
            await chat.command(str(turn["command"]))
        else:
            raise AssertionError(f"turn {n}: needs say, press or command")
        expect = turn.get("expect") or {}
        where = f"turn {n} ({turn})\nreplies:\n{chat.text}\nkeys: {chat.keys}\nbuttons: {chat.last_buttons}"
        text = chat.text.lower()
        for s in expect.get("contains", []):
            assert str(s).lower() in text, f"missing {s!r} in {where}"
        for s in expect.get("not_contains", []):
            assert str(s).lower() not in text, f"unexpected {s!r} in {where}"
        for k in expect.get("keys", []):
            assert k in chat.keys, f"missing key {k!r} in {where}"
        if "buttons" in expect:
            assert chat.last_buttons == [str(b) for b in expect["buttons"]], where
        if "flow" in expect or "step" in expect:
            state = await chat.state()
            if "flow" in expect:
                assert state.flow == expect["flow"], f"flow {state.flow!r}.{state.step} in {where}"
            if "step" in expect:
                assert state.step == expect["step"], f"step {state.flow}.{state.step!r} in {where}"
