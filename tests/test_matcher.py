"""The free-text matcher as a user would notice it: typos, near misses, small talk, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bot.core.errors import ContentError
from bot.core.matcher import INTENT_IDS, Matcher, validate_intents
from bot.core.normalize import normalize

ROOT = Path(__file__).resolve().parents[1]
INTENTS = ROOT / "content" / "en" / "intents.yaml"


@pytest.fixture(scope="module")
def matcher() -> Matcher:
    return Matcher.load(INTENTS)


# --- the library -------------------------------------------------------------------


def test_library_is_valid_and_complete(matcher: Matcher) -> None:
    assert validate_intents(INTENTS) == []
    assert matcher.intents == INTENT_IDS
    examples = matcher.examples()
    assert set(examples) == set(INTENT_IDS)
    for intent, phrases in examples.items():
        assert len(phrases) >= 35, intent


# --- typos and case ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("ICOUD FULL", "storage_full"),
        ("icloud full", "storage_full"),
        ("my iclod storgae is ful", "storage_full"),
        ("bakcup stuk at 50%", "backup_stuck"),
        ("BACKUP STUCK ON ESTIMATING TIME REMAINING", "backup_stuck"),
        ("forgot my iphnoe pasccode", "locked_out"),
        ("is icloud down??", "server_status"),
        ("i want to talk to a human", "human_agent"),
        ("how much does data recovery cost", "recovery_cost"),
    ],
)
def test_typos_and_case_do_not_matter(matcher: Matcher, text: str, intent: str) -> None:
    result = matcher.match(text)
    assert result.decision == "accept", result
    assert result.intent == intent


def test_case_and_punctuation_give_the_same_scores(matcher: Matcher) -> None:
    a = matcher.match("my backup is stuck at 40 %")
    b = matcher.match("MY BACKUP IS STUCK AT 40%!!!")
    assert a.candidates == b.candidates


def test_quoted_ios_error_is_recognised(matcher: Matcher) -> None:
    result = matcher.match('it keeps saying "Backup Could Not Be Created"')
    assert result.intent == "backup_failed"


# --- one shared word is not a match ---------------------------------------------------


@pytest.mark.parametrize("text", ["backup", "iphone", "my", "icloud", "the phone", "photos"])
def test_one_shared_word_does_not_force_a_match(matcher: Matcher, text: str) -> None:
    assert matcher.match(text).decision != "accept"


# --- out of scope --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "how do i back up my android phone",
        "samsung galaxy backup to google drive failed",
        "my screen is cracked, where can i get it repaired",
        "my iphone battery drains really fast",
        "time machine backup failed on my mac",
        "what's the weather tomorrow",
        "tell me a joke",
        "my apple watch wont pair",
        "cancel my apple music subscription",
    ],
)
def test_near_misses_are_not_accepted(matcher: Matcher, text: str) -> None:
    result = matcher.match(text)
    assert result.decision != "accept", result


@pytest.mark.parametrize(
    "text", ["tell me a joke", "whats the weather in paris", "my samsung phone wont back up"]
)
def test_clearly_unrelated_is_rejected(matcher: Matcher, text: str) -> None:
    result = matcher.match(text)
    assert result.decision == "reject"
    assert result.intent is None


# --- result shape ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["", "hi", "icloud full", "tell me a joke", "backup", "x" * 10_000, "🙂🙂🙂"]
)
def test_always_three_distinct_candidates(matcher: Matcher, text: str) -> None:
    result = matcher.match(text)
    assert len(result.candidates) == 3
    ids = [c.intent for c in result.candidates]
    assert len(set(ids)) == 3 and set(ids) <= set(INTENT_IDS)
    scores = [c.score for c in result.candidates]
    assert scores == sorted(scores, reverse=True)
    assert 0.0 <= result.score <= 100.0
    assert result.score == result.candidates[0].score
    assert result.text == text
    if result.decision == "accept":
        assert result.intent == result.candidates[0].intent
    else:
        assert result.intent is None
    assert result.decision in {"accept", "suggest", "reject"}


def test_unsure_message_is_suggested(matcher: Matcher) -> None:
    result = matcher.match("problem with my icloud backup")
    assert result.decision == "suggest"


# --- small talk ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("hi", "greeting"),
        ("Hello there!", "greeting"),
        ("good morning", "greeting"),
        ("thanks!", "thanks"),
        ("thanks a lot", "thanks"),
        ("Thank you so much :)", "thanks"),
        ("bye", "bye"),
        ("ok bye bye", "bye"),
        ("what can you do", "help"),
        ("help", "help"),
    ],
)
def test_small_talk(matcher: Matcher, text: str, kind: str) -> None:
    assert matcher.smalltalk(text) == kind


@pytest.mark.parametrize(
    "text",
    ["hi my backup failed", "thanks but my icloud is still full", "", "help my phone is dead"],
)
def test_small_talk_only_when_nothing_else(matcher: Matcher, text: str) -> None:
    assert matcher.smalltalk(text) is None


# --- robustness ----------------------------------------------------------------------

NASTY = [
    "",
    " ",
    "\n\t",
    "x" * 10_000,
    "backup failed " * 1_000,
    "😀🔥💾📱",
    "مرحبا النسخ الاحتياطي فشل",
    "גיבוי נכשל",
    "\u202eicloud full\u202c",
    "a\x00b\x07c\x1b[31m",
    "\ud800 lone surrogate",
    "％％％ ＩＣＬＯＵＤ　ＦＵＬＬ",
    "'''\"\"\"",
    "i" * 600 + " icloud full",
]


@pytest.mark.parametrize("text", NASTY)
def test_never_crashes(matcher: Matcher, text: str) -> None:
    # speed is the matcher bench's job (`python -m bot bench --matcher`), not a wall-clock bound here
    result = matcher.match(text)
    assert len(result.candidates) == 3
    matcher.smalltalk(text)
    normalize(text)


def test_fullwidth_text_is_folded(matcher: Matcher) -> None:
    assert normalize("ＩＣＬＯＵＤ　ＦＵＬＬ") == "icloud full"


def test_long_input_is_capped() -> None:
    assert len(normalize("backup " * 5_000)) <= 700


# --- broken library ------------------------------------------------------------------


def _broken(tmp_path: Path, mutate) -> Path:  # type: ignore[no-untyped-def]
    data = yaml.safe_load(INTENTS.read_text(encoding="utf-8"))
    mutate(data)
    path = tmp_path / "intents.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def _load_problems(path: Path) -> list[str]:
    with pytest.raises(ContentError) as info:
        Matcher.load(path)
    text = str(info.value)
    assert str(path) in text
    return [p.key for p in info.value.problems]


def test_unknown_intent_is_named(tmp_path: Path) -> None:
    def mutate(d: dict) -> None:  # type: ignore[type-arg]
        d["intents"]["backup_explodes"] = d["intents"]["storage_full"]

    keys = _load_problems(_broken(tmp_path, mutate))
    assert "intents.backup_explodes" in keys


def test_missing_intent_is_named(tmp_path: Path) -> None:
    def mutate(d: dict) -> None:  # type: ignore[type-arg]
        del d["intents"]["human_agent"]

    assert "intents.human_agent" in _load_problems(_broken(tmp_path, mutate))


def test_empty_examples_are_named(tmp_path: Path) -> None:
    def mutate(d: dict) -> None:  # type: ignore[type-arg]
        d["intents"]["backup_stuck"]["examples"] = []

    assert "intents.backup_stuck.examples" in _load_problems(_broken(tmp_path, mutate))


def test_bad_keyword_weight_is_named(tmp_path: Path) -> None:
    def mutate(d: dict) -> None:  # type: ignore[type-arg]
        d["intents"]["storage_full"]["keywords"]["full"] = "lots"
        d["intents"]["storage_full"]["keywords"]["storage"] = 99

    keys = _load_problems(_broken(tmp_path, mutate))
    assert "intents.storage_full.keywords.full" in keys
    assert "intents.storage_full.keywords.storage" in keys


def test_invalid_yaml_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "intents.yaml"
    path.write_text("intents: [unclosed\n  - :::", encoding="utf-8")
    problems = validate_intents(path)
    assert problems and problems[0].file == str(path)
    with pytest.raises(ContentError):
        Matcher.load(path)


def test_missing_file_is_reported(tmp_path: Path) -> None:
    problems = validate_intents(tmp_path / "nope.yaml")
    assert problems and "cannot read" in problems[0].message
