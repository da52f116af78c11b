"""Damage words pick a cost row only on whole words and phrases; unclear ones pick none."""

from __future__ import annotations

import pytest

from bot.core.actions import ActionContext, cost_answer, read_damage
from bot.runtime import Knowledge


@pytest.mark.parametrize(
    ("text", "group"),
    [
        ("fell in the pool and now it won't turn on", "water"),  # the clear word wins
        ("spilled coffee all over it", "water"),
        ("i searched everywhere for my backup", None),  # not "sea"
        ("my seatbelt buckle cracked the screen", None),
        ("the wifi keeps dropping", None),  # not "drop"
        ("keyboard is sticky", None),  # not "board"
        ("it fell off the table", "drop"),
        ("wont turn on at all", "power"),
        ("won’t turn on since monday", "power"),  # a typographic apostrophe
        ("black screen, nothing happens", "power"),
        ("stuck on the apple logo after the update", "software"),
        ("lightning port is broken", "port"),
        ("they did a chip-off on the logic board", "logic_board"),
        ("I factory reset it without a backup", "reset"),
    ],
)
def test_read_damage(knowledge: Knowledge, text: str, group: str | None) -> None:
    assert read_damage(text, knowledge.content) == group


@pytest.mark.parametrize(
    ("values", "branch", "price"),
    [
        ({"trigger_text": "my phone is dead"}, "ambiguous", None),
        ({"trigger_text": "my phone is dead", "damage_kind": "water"}, "found", "$400 - $1,000"),
        ({"trigger_text": "water damage, what does it cost", "damage_kind": "port"}, "found", "$400 - $1,000"),
        ({"trigger_text": "how much does recovery cost"}, "none", None),
    ],
)
async def test_cost_answer(knowledge: Knowledge, values: dict[str, str], branch: str, price: str | None) -> None:
    result = await cost_answer(ActionContext("t", values, knowledge.content))
    assert result.branch == branch
    assert dict(result.set).get("price_range") == price
