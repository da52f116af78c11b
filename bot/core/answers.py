"""Answer cards (content/<lang>/answers.yaml): a direct question gets the guide's fact at once.

Contract:

* :func:`load_answers` reads and validates the cards against the facts and the intent ids,
  returning (book or None, problems) with file and key named, so ``python -m bot check``
  lists every problem: unknown intent, a ``{key}`` that is no fact, a digit written into an
  answer (numbers come from content/facts.yaml only), an answer over 600 characters, a
  question shared by two cards, follow-ups that point nowhere.
* :meth:`AnswerBook.find` says which card answers a message, or None. It answers only a
  message that reads as a question (question mark, or it opens like one: how, what, where,
  can I, is it...), or a statement that is a card's question almost word for word, and only
  when the best card is close enough and clearly ahead of the second. Closeness blends MiniLM
  similarity to the card's question phrasings (when the model runs; the matcher's encoder is
  shared) with rapidfuzz token scores on normalised text.
* Cards are rendered once at load: the engine says ``card.answer`` as it is.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rapidfuzz import fuzz, process

from .content import Content
from .errors import Problem
from .normalize import STOPWORDS, Normalizer
from .semantic import Encoder, cached_vectors

MAX_ANSWER = 600
MAX_TITLE = 30
MIN_QUESTIONS = 3
MAX_THEN = 2
_ID_RE = re.compile(r"^[a-z0-9_]{1,40}$")

# --- decision (chosen on tests/data/questions.yaml and the real-style set's complaints) -------
W_SEM = 0.6  # share of MiniLM similarity in a card's score (the rest: rapidfuzz)
ANSWER_MIN = 62.0  # best card score needed to answer
ANSWER_LEAD = 6.0  # ... and its lead over the second card (unless the two point at each other)
CARD_OVER_INTENT = 75.0  # a card this close answers even when the matcher is sure of another topic
ANSWER_MIN_NO_MODEL = 70.0  # without the model (rapidfuzz only) be stricter
ANSWER_STATEMENT = 88.0  # a message that is no question: on our sets 4 of 922 reach it, all on topic

_QUESTION_OPENERS = (
    "how", "what", "whats", "where", "wheres", "when", "why", "which", "who", "is", "are", "can",
    "could", "do", "does", "did", "will", "would", "should", "may", "was", "were", "has", "have",
    "isnt", "arent", "cant", "dont", "doesnt", "wont", "any", "tell",
)
_QUESTION_INSIDE = re.compile(
    r"\b(how (much|many|long|do|does|can|to|often)|what (is|are|does|do|happens|if)|where (is|are|do|can)"
    r"|is (it|there|my|the)|are (my|the|there)|can (i|you|a|the)|do (i|you)|does (it|the|a|my)|will (it|i)"
    r"|should i|i wonder|wondering|want to know|tell me)\b"
)


def is_question(text: str) -> bool:
    """Whether a message reads as a question (not a complaint that merely describes)."""
    if "?" in text:
        return True
    text = re.sub(r"@\w+", " ", text.lower())  # tweets open with a handle
    words = re.sub(r"[^\w\s]", " ", text.replace("'", "").replace("’", "")).split()
    if not words:
        return False
    if words[0] in _QUESTION_OPENERS or (len(words) > 1 and words[0] in ("so", "hi", "hey", "hello", "pls",
                                                                         "please", "ok", "and", "but")
                                         and words[1] in _QUESTION_OPENERS):
        return True
    return bool(_QUESTION_INSIDE.search(" ".join(words)))


@dataclass(frozen=True)
class Card:
    id: str
    intent: str
    title: str
    questions: tuple[str, ...]
    answer: str  # rendered, facts filled in
    then: tuple[str, ...]  # "intent_id" or "card:<id>"


@dataclass(frozen=True)
class AnswerHit:
    card: Card
    score: float
    question: bool  # the message read as a question


def _problem(path: Path, key: str, msg: str) -> Problem:
    return Problem(str(path), key, msg)


def load_answers(path: Path, content: Content, intents: Sequence[str]) -> tuple[list[Card], list[Problem]]:
    """Read, validate and render the cards (problems name file and key)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return [], [_problem(path, "-", f"cannot read: {exc.strerror}")]
    except yaml.YAMLError as exc:
        return [], [_problem(path, "-", f"invalid YAML: {exc}")]
    cards_raw = raw.get("cards") if isinstance(raw, dict) else None
    if not isinstance(cards_raw, dict) or not cards_raw:
        return [], [_problem(path, "cards", "missing or not a mapping of cards")]
    facts = content.rendered_facts()
    norm = Normalizer()
    problems: list[Problem] = []
    cards: list[Card] = []
    seen_q: dict[str, str] = {}
    for cid, body in cards_raw.items():
        key = f"cards.{cid}"
        if not isinstance(cid, str) or not _ID_RE.match(cid):
            problems.append(_problem(path, key, "card id must be [a-z0-9_], at most 40 characters"))
            continue
        if not isinstance(body, dict):
            problems.append(_problem(path, key, "must be a mapping"))
            continue
        for extra in set(body) - {"intent", "title", "questions", "answer", "then"}:
            problems.append(_problem(path, f"{key}.{extra}", "unknown field"))
        intent = body.get("intent")
        if intent not in intents:
            problems.append(_problem(path, f"{key}.intent", f"unknown intent {intent!r}"))
        title = body.get("title")
        if not isinstance(title, str) or not title.strip() or len(title) > MAX_TITLE:
            problems.append(_problem(path, f"{key}.title", f"must be a label of 1-{MAX_TITLE} characters"))
            title = str(title or cid)
        qs = body.get("questions")
        questions: list[str] = []
        if not isinstance(qs, list) or len(qs) < MIN_QUESTIONS:
            problems.append(_problem(path, f"{key}.questions", f"needs at least {MIN_QUESTIONS} phrasings"))
            qs = qs if isinstance(qs, list) else []
        for i, q in enumerate(qs):
            if not isinstance(q, str) or not norm.tokens(q):
                problems.append(_problem(path, f"{key}.questions[{i}]", "must be a non-empty phrase"))
                continue
            n = norm.normalize(q)
            if n in seen_q and seen_q[n] != cid:
                problems.append(_problem(path, f"{key}.questions[{i}]", f"also a question of {seen_q[n]}"))
            seen_q[n] = cid
            questions.append(q)
        answer = body.get("answer")
        rendered = ""
        if not isinstance(answer, str) or not answer.strip():
            problems.append(_problem(path, f"{key}.answer", "must be a non-empty text"))
        else:
            try:
                fields = [f for _, f, _, _ in string.Formatter().parse(answer) if f is not None]
            except ValueError as exc:
                problems.append(_problem(path, f"{key}.answer", f"bad template: {exc}"))
                fields = None
            if fields is not None:
                unknown = [f for f in fields if f not in facts]
                for f in unknown:
                    problems.append(_problem(path, f"{key}.answer", f"{{{f}}} is not a fact in facts.yaml"))
                literal = re.sub(r"{[^{}]*}", "", answer)
                if re.search(r"\d", literal):
                    digits = ", ".join(sorted(set(re.findall(r"\S*\d\S*", literal))))
                    problems.append(_problem(path, f"{key}.answer",
                                             f"numbers must come from facts.yaml as {{key}}, found: {digits}"))
                if not unknown:
                    rendered = answer.format(**facts).strip()
                    if len(rendered) > MAX_ANSWER:
                        problems.append(_problem(path, f"{key}.answer",
                                                 f"{len(rendered)} characters rendered, at most {MAX_ANSWER}"))
        then = body.get("then")
        if not isinstance(then, list) or not 1 <= len(then) <= MAX_THEN or not all(isinstance(t, str) for t in then):
            problems.append(_problem(path, f"{key}.then", f"needs 1-{MAX_THEN} follow-ups (intent id or card:<id>)"))
            then = []
        cards.append(Card(cid, str(intent), title.strip(), tuple(questions), rendered, tuple(then)))
    ids = {c.id for c in cards}
    for c in cards:
        for t in c.then:
            kind, _, arg = t.partition(":")
            if t.startswith("card:"):
                if arg not in ids or arg == c.id:
                    problems.append(_problem(path, f"cards.{c.id}.then", f"{t}: no such other card"))
            elif t not in intents:
                problems.append(_problem(path, f"cards.{c.id}.then", f"{t}: not an intent id or card:<id>"))
    return cards, problems


class AnswerBook:
    """Finds the card that answers a question."""

    def __init__(self, cards: Sequence[Card], encoder: Encoder | None = None, cache: Path | None = None) -> None:
        self.cards = {c.id: c for c in cards}
        self._norm = Normalizer()
        self._q_card: list[str] = []
        self._q_norm: list[str] = []
        q_raw: list[str] = []
        for c in cards:
            for q in c.questions:
                self._q_card.append(c.id)
                self._q_norm.append(self._content(q))
                q_raw.append(q)
        # the phrasings are grouped by card, in card order: a card's best is one reduceat
        self._starts = np.array([i for i, cid in enumerate(self._q_card) if i == 0 or self._q_card[i - 1] != cid], dtype=np.intp)
        self._card_ids = [self._q_card[i] for i in self._starts]
        self._encoder = encoder
        self._vecs: Any = cached_vectors(encoder, q_raw, cache) if encoder is not None else None
        self.answer_min = ANSWER_MIN if encoder is not None else ANSWER_MIN_NO_MODEL

    def _content(self, text: str) -> str:
        toks = self._norm.tokens(text)
        return " ".join([t for t in toks if t not in STOPWORDS] or toks)

    @property
    def semantic(self) -> bool:
        return self._vecs is not None

    def scores(self, text: str) -> dict[str, float]:
        """Per card: the best blended closeness (0-100) over its question phrasings."""
        q = self._content(text)
        if not self._q_norm:
            return {}
        if q:  # one row of token_sort_ratio against every phrasing, in C
            fz = process.cdist([q], self._q_norm, scorer=fuzz.token_sort_ratio, dtype=np.float64)[0]
        else:
            fz = np.zeros(len(self._q_norm))
        if self._vecs is not None and self._encoder is not None:
            sims = np.einsum("ij,j->i", self._vecs, self._encoder.encode_one(text)).astype(np.float64)  # no BLAS threads
            blend = W_SEM * 100.0 * np.maximum(sims, 0.0) + (1 - W_SEM) * fz
        else:
            blend = fz
        return dict(zip(self._card_ids, np.maximum.reduceat(blend, self._starts).tolist(), strict=True))

    def find(self, text: str, accepted: str | None = None) -> AnswerHit | None:
        """The card that answers this message, or None (not a question, or no card close enough).

        ``accepted``: the intent the matcher is sure of; a card of another topic then answers
        only when it is very close (CARD_OVER_INTENT).
        """
        if not isinstance(text, str) or not text.strip():
            return None
        question = is_question(text)
        sc = self.scores(text)
        ranked = sorted(sc.items(), key=lambda kv: -kv[1])
        if not ranked:
            return None
        best_id, best = ranked[0]
        second = ranked[1][1] if len(ranked) > 1 else 0.0
        # a statement is answered only when it says a card's question almost word for word
        # ("I accidentally deleted a whole album": Recently Deleted, not the deleted-backup flow)
        if not question and best < ANSWER_STATEMENT:
            return None
        if best < self.answer_min or best - second < ANSWER_LEAD and not self._related(best_id, ranked[1][0]):
            return None
        if accepted and accepted != self.cards[best_id].intent and best < CARD_OVER_INTENT:
            return None
        return AnswerHit(self.cards[best_id], round(best, 1), question)

    def _related(self, a: str, b: str) -> bool:
        """Two cards that point at each other answer the same question well enough."""
        ca, cb = self.cards[a], self.cards[b]
        return f"card:{b}" in ca.then or f"card:{a}" in cb.then
