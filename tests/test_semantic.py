"""The MiniLM part of the matcher: runs offline from the committed model, caches the
library's vectors, falls back to the rapidfuzz blend (logged once) when it cannot load,
and long stories are offered buttons instead of being rejected."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot.config import ConfigError, Settings
from bot.core import semantic
from bot.core.matcher import Matcher
from bot.core.semantic import SemanticIndex, load_encoder

ROOT = Path(__file__).resolve().parents[1]
INTENTS = ROOT / "content" / "en" / "intents.yaml"


@pytest.fixture(scope="module")
def encoder() -> semantic.Encoder:
    enc = load_encoder()
    assert enc is not None, "the committed model must load in the test environment"
    return enc


def test_paraphrases_are_close_and_topics_apart(encoder: semantic.Encoder) -> None:
    v = encoder.encode(["icloud is full so my phone cant back up",
                        "no space left in my apple cloud, backups keep failing",
                        "how much does it cost to recover data from a drowned phone"])
    assert v.shape == (3, 384)
    assert float(v[0] @ v[1]) > 0.5
    assert float(v[0] @ v[2]) < 0.4


def test_library_vectors_cached_by_content(encoder: semantic.Encoder, tmp_path: Path) -> None:
    calls: list[int] = []

    class Counting:
        fingerprint = encoder.fingerprint

        def encode(self, texts: list[str]):  # noqa: ANN201 - numpy array
            calls.append(len(texts))
            return encoder.encode(texts)

        def encode_one(self, text: str):  # noqa: ANN201 - numpy array
            return encoder.encode_one(text)

    texts = ["backup stuck at 80 percent", "is icloud down", "phone fell in the sea"]
    SemanticIndex(Counting(), texts, [0, 1, 2], 3, cache=tmp_path)  # type: ignore[arg-type]
    assert calls == [3]
    idx = SemanticIndex(Counting(), texts, [0, 1, 2], 3, cache=tmp_path)  # type: ignore[arg-type]
    assert calls == [3], "a warm start must read the cache, not run the model"
    SemanticIndex(Counting(), texts + ["one more"], [0, 1, 2, 0], 3, cache=tmp_path)  # type: ignore[arg-type]
    assert calls == [3, 4], "changed content must not reuse old vectors"
    sc = idx.scores("my backup hangs at 80%")
    assert sc.index(max(sc)) == 0


def test_off_switch_and_missing_model_fall_back_logged_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(semantic, "_warned", set())
    caplog.set_level(logging.WARNING, logger="bot.core.semantic")
    assert load_encoder(tmp_path) is None  # no model file there
    assert load_encoder(tmp_path) is None
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "rapidfuzz blend only" in lines[0] and str(tmp_path) in lines[0]
    (tmp_path / semantic.MODEL_FILE).write_bytes(b"not an onnx model")
    (tmp_path / semantic.TOKENIZER_FILE).write_text("{}")
    assert load_encoder(tmp_path) is None
    assert len(caplog.records) == 2 and "not an onnx model" not in caplog.text  # file named, not dumped
    off = Settings.from_env({"BOT_SEMANTIC": "off"})
    assert load_encoder(enabled=off.semantic) is None
    matcher = Matcher.load(INTENTS, load_encoder(enabled=off.semantic))
    assert not matcher.semantic
    assert matcher.match("icloud storage full cant backup").intent == "storage_full"


def test_semantic_blend_is_on_in_the_bot(encoder: semantic.Encoder, tmp_path: Path) -> None:
    matcher = Matcher.load(INTENTS, encoder, tmp_path)
    assert matcher.semantic
    # no shared anchor word with the library's storage examples, only meaning
    r = matcher.match("apple says my cloud allowance is used up so the nightly copy of my phone never happens")
    assert r.candidates[0].intent == "storage_full"


@pytest.mark.parametrize("semantic_on", [False, True])
def test_long_story_gets_buttons_where_a_short_message_is_rejected(
    encoder: semantic.Encoder, tmp_path: Path, semantic_on: bool
) -> None:
    matcher = Matcher.load(INTENTS, encoder if semantic_on else None, tmp_path)
    # an in-scope intent leads, but "none" is close (out-of-scope words inside the story)
    scores = [0.0] * (len(matcher.intents) + 1)
    scores[matcher.intents.index("backup_failed")] = 40.0
    scores[matcher.intents.index("backup_stuck")] = 30.0
    scores[-1] = 36.0
    short = "battery shop google backup error"
    story = ("so my battery was dying and the guy at the shop said he could swap it but first i should "
             "save everything, and now the phone says the backup could not be completed, wifi is fine")
    assert matcher.decide(short, scores).decision == "reject"
    r = matcher.decide(story, scores)
    assert r.decision == "suggest"
    assert [c.intent for c in r.candidates][:2] == ["backup_failed", "backup_stuck"]
    scores[-1] = 45.0  # "none" leads: even a story is not offered in-scope buttons
    assert matcher.decide(story, scores).decision == "reject"


def test_wordpiece_gives_the_ids_of_the_reference_tokenizer() -> None:
    tokenizers = pytest.importorskip("tokenizers")  # a dev tool here, not a dependency
    from bot.core.wordpiece import WordPiece

    ref = tokenizers.Tokenizer.from_file(str(semantic.MODEL_DIR / semantic.TOKENIZER_FILE))
    ref.enable_truncation(max_length=128)
    ref.no_padding()
    ours = WordPiece.from_file(semantic.MODEL_DIR / semantic.TOKENIZER_FILE)
    matcher = Matcher.load(INTENTS)
    texts = [t for _, t in matcher.library_items()]
    texts += ["Café naïve 😭 — “quotes” 你好 wtf!!!", "x" * 300, "tab\tand\nnewline", " ".join(["word"] * 200)]
    assert [ours.encode(t) for t in texts] == [ref.encode(t).ids for t in texts]


def test_the_switch_and_the_vector_cache_come_from_the_settings(tmp_path: Path) -> None:
    """BOT_SEMANTIC and BOT_CACHE_DIR are read by bot.config like every other setting (a typo
    is refused at start, named) and handed to the encoder: the library's vectors go where
    the operator said."""
    with pytest.raises(ConfigError, match="BOT_SEMANTIC"):
        Settings.from_env({"BOT_SEMANTIC": "of"})
    s = Settings.from_env({"BOT_CACHE_DIR": str(tmp_path / "vectors")})
    assert s.semantic and Settings.from_env({"BOT_SEMANTIC": "0"}).semantic is False
    enc = load_encoder(enabled=s.semantic, cache_dir=s.cache_dir)
    assert enc is not None
    semantic.cached_vectors(enc, ["my backup is stuck at 80%", "icloud full again"])
    assert len(list((tmp_path / "vectors").glob("library-*.npy"))) == 1
