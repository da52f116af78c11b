"""What typed text means at a step, before the matcher is asked: a button's label typed out
(or its number), yes / no in its many spellings ("yep", "nooo", "yse", "nope still broken"),
a topic's menu title, a value an ask step wants (a size, an e-mail, a phone number, text) —
and the labels of a step's and an offer's buttons. Built from the content, the flows and the
matcher's answer cards; no state of its own (the engine asks, the conversation's state is
passed in).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Protocol

from rapidfuzz import fuzz
from rapidfuzz.distance import OSA

from .answers import Card
from .content import Content
from .flows import FlowSet, Step
from .ports import State
from .values import parse_email, parse_size_gb, parse_text, phone_candidate

LABEL_MATCH = 88  # typed text this close to a button label counts as pressing it
_REPEAT_RE = re.compile(r"(\w)\1{2,}")

SHORT_ANSWER_WORDS = 6  # "nope still broken": a short message that starts with a yes/no word

_NORM_RE = re.compile(r"[^\w%]+")


def is_number(text: str) -> bool:
    """Decimal digits only: "²" and "①" are digits to ``isdigit`` but not to ``int``."""
    return text.isdecimal() and len(text) <= 6


def says(typed: str, words: tuple[str, ...], exact: frozenset[str] = frozenset()) -> bool:
    """Whether a normalised message is, or short and starts with, one of ``words``
    (those in ``exact`` count only as the whole message: "ok", not "ok but still broken")."""
    if typed in words:
        return True
    tokens = typed.split()
    if len(tokens) > SHORT_ANSWER_WORDS:
        return False
    return any(tokens[: len(w.split())] == w.split() for w in words if w not in exact)


def squeeze(text: str) -> str:
    """Letters typed three or more times in a row once ("yesss", "nooo" -> "yes", "no")."""
    return _REPEAT_RE.sub(r"\1", text)


def norm(text: str) -> str:
    return " ".join(_NORM_RE.sub(" ", text.lower().replace("'", "").replace("’", "")).split())


class CardSource(Protocol):
    """Where an offered answer card's title comes from (the matcher)."""

    def answer_card(self, card_id: str) -> Card | None: ...  # pragma: no cover


class Typed:
    """The engine's reading of typed text (see the module docstring)."""

    def __init__(self, content: Content, flows: FlowSet, matcher: CardSource) -> None:
        self.content = content
        self.flows = flows
        self.matcher = matcher
        self.yes = tuple(norm(w) for w in content.words("engine.yes_words"))
        self.no = tuple(norm(w) for w in content.words("engine.no_words"))
        self.exact = frozenset(norm(w) for w in content.words("engine.exact_words"))

    def step_buttons(self, step: Step, values: Mapping[str, str]) -> list[tuple[str, str]]:
        label = self.content.raw
        if step.multi:
            chosen = set(values.get(step.multi.var, "").split(","))
            out = []
            for o in step.multi.options:
                mark = "✓ " if o.id in chosen else ""
                out.append((f"m_{o.id}", mark + label(o.label)))
            out.append(("m__done", label(step.multi.done_label)))
            return out
        return [(b.id, label(b.label)) for b in step.buttons]

    def offer_label(self, bid: str) -> str:
        kind, _, arg = bid.partition(":")
        if kind in ("intent", "switch"):
            flow = self.flows.flow_for_intent(arg)
            return self.content.raw(flow.title) if flow else arg
        if kind == "other":
            return self.content.raw("engine.something_else")
        if kind == "card":
            card = self.matcher.answer_card(arg)
            return card.title if card else arg
        return self.content.raw("engine.switch_no")

    def button(self, state: State, step: Step | None, text: str) -> str | None:
        """The id of the button whose label the user typed (or yes/no words), if any."""
        options: list[tuple[str, str]] = []
        if state.offer:
            options = [(b, self.offer_label(b)) for b in state.offer]
        elif step:
            options = self.step_buttons(step, state.values)
        if not options:
            return None
        typed = norm(text)
        if not typed:
            return None
        if is_number(typed) and 1 <= int(typed) <= len(options) and not (step and step.ask and not state.offer):
            return options[int(typed) - 1][0]
        best, best_score = None, 0.0
        for bid, label in options:
            score = fuzz.ratio(typed, norm(label.replace("✓ ", "")))
            if score > best_score:
                best, best_score = bid, score
        if best is not None and best_score >= LABEL_MATCH:
            return best
        answer = self.yes_no(typed)
        if answer is None:
            return None
        ids = {bid for bid, _ in options}
        if answer in ids:
            return answer
        if state.offer:  # the person typed off-script, then answered: yes / no still mean something
            switch = next((b for b in state.offer if b.startswith("switch:")), None)
            if switch is not None:
                return switch if answer == "yes" else ("stay" if "stay" in ids else None)
            if step and any(b.id == answer for b in step.buttons):
                return answer  # the step's own yes / no (pressing it drops the offer)
        return None

    def yes_no(self, typed: str) -> str | None:
        """"yes", "no" or None for a normalised message ("yep", "nope still broken", "yse", "nooo")."""
        squeezed = squeeze(typed)
        hits = [a for a, words in (("yes", self.yes), ("no", self.no))
                if says(typed, words, self.exact) or says(squeezed, words, self.exact)]
        if len(hits) == 1:
            return hits[0]
        if hits or " " in squeezed or len(squeezed) < 3:
            return None
        # one short word with a typo: one edit (or swap) from exactly one of the words
        near = {a for a, words in (("yes", self.yes), ("no", self.no))
                for w in words if " " not in w and len(w) >= 3 and w not in self.exact
                and OSA.distance(squeezed, w) <= 1}
        return near.pop() if len(near) == 1 else None

    def title(self, text: str) -> str | None:
        """The flow whose menu title the user typed ("check my last backup"), if any."""
        typed = norm(text)
        if not typed or len(typed) > 60:
            return None
        best, best_score = None, 0.0
        for flow in self.flows.flows.values():
            if not flow.intents or not self.content.has(flow.title):
                continue
            score = fuzz.ratio(typed, norm(self.content.raw(flow.title)))
            if score > best_score:
                best, best_score = flow.id, score
        return best if best_score >= LABEL_MATCH else None

    @staticmethod
    def parse_value(kind: str, text: str) -> tuple[str | None, bool]:
        if kind == "size_gb":
            return parse_size_gb(text), False
        if kind == "email":
            return parse_email(text), False
        if kind == "phone":
            return phone_candidate(text), False
        if kind == "text":
            parsed = parse_text(text)
            return (parsed[0], parsed[1]) if parsed else (None, False)
        return None, False
