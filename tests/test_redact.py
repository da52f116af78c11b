"""The redaction gate against its table of cases (tests/data/secrets.yaml)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bot.core.redact import MASK, redact

TABLE = yaml.safe_load((Path(__file__).parent / "data" / "secrets.yaml").read_text(encoding="utf-8"))


def test_the_table_is_big_enough() -> None:
    assert len(TABLE["redact"]) >= 40 and len(TABLE["keep"]) >= 20


@pytest.mark.parametrize("case", TABLE["redact"], ids=lambda c: c["text"][:40])
def test_secret_is_masked_and_the_rest_stays(case: dict[str, object]) -> None:
    out, found = redact(str(case["text"]))
    assert found and MASK in out
    for secret in case["secrets"]:  # type: ignore[attr-defined]
        assert str(secret) not in out, out
    for kept in case.get("keep", ()):  # type: ignore[attr-defined]
        assert str(kept) in out, out
    assert redact(out)[0] == out  # idempotent


@pytest.mark.parametrize("text", TABLE["keep"])
def test_no_false_positive(text: str) -> None:
    assert redact(text) == (text, False)


@pytest.mark.parametrize(
    "text",
    ["", " ", "password", "password is", "pin:", "::::", "password is \"unclosed", "code " * 300,
     "4 " * 50, "passwort ist\n\nhallo", "🔑 password: 🔒🔒", "pw=", "'s 's 's"],
)
def test_odd_input_never_breaks(text: str) -> None:
    out, _ = redact(text)
    assert isinstance(out, str) and redact(out)[0] == out


def test_the_fast_path_never_skips_a_keyword() -> None:
    """A text without any stem is let through unread: every keyword must contain one."""
    from bot.core.redact import _STEMS, VOCABULARY

    words = (VOCABULARY.strong | VOCABULARY.weak | VOCABULARY.code | VOCABULARY.unlock | VOCABULARY.fuzzy
             | VOCABULARY.phrases)
    assert [w for w in sorted(words) if not _STEMS.search(w)] == []
