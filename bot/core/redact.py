"""The one redaction gate: finds the passwords, passcodes and PINs people type, so a secret is
never stored, mirrored, mailed, matched or logged.

Contract: ``redact(text) -> (masked, found)``. Only the secret is replaced by ``MASK``; the
keyword and the separator stay ("password is: [redacted]"), so the sentence still reads and
the matcher still sees what it is about. ``redact`` is idempotent and never raises.
The engine runs every text a user sends through it before anything else sees the text
(``Engine.handle``); the log filter (``bot.logfilter``) runs every log line through it.

It works on tokens, driven by the word lists in ``VOCABULARY`` (``secretwords``; English and German, plus the
common Spanish and French forms). What it recognises:

1. keyword [linker words] separator secret — "password is: Sunsh1ne", "the password for my
   apple id is X", "my password's X", "Passwort lautet X", "mi contraseña es X". The secret
   runs to the end of the clause (punctuation, "and", "but", ...), so several words go too,
   unless the first word says it is a description ("password is wrong", "… is 6 digits").
2. keyword secret-looking-token — "pw Kitten77", "passwort geheim123!" (letters with digits
   or symbols).
3. digit codes of 4-8 digits (also spaced: "4 8 2 9 1 3") a few words after a code, PIN,
   passcode or unlock word — "iPhone 13, code 5566", "my code was maybe 1234 or 4321".
   Never: numbers after error words or device names, with units or prices, years after
   "in/since" ("error code 4013", "50 GB", "iOS 17.4.1", "iPhone 13", "$2.99").
4. secret "is my" keyword — "Sommer2024 is my password".

Long keywords are recognised with one typo ("pasword", "passwrod", "paswort"). The cases it
must and must not catch are a table in tests/data/secrets.yaml.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from rapidfuzz.distance import OSA

from .messages import Inbound
from .secretwords import VOCABULARY, Vocabulary
from .values import clean_text

MASK = "[redacted]"


@dataclass(frozen=True, slots=True)
class _Tok:
    text: str  # the token without trailing punctuation
    low: str
    start: int
    end: int  # end of the core text
    mask_end: int  # end of what is masked when this token is (core plus "!?")
    clause_end: bool  # the clause ends after this token (",", ".", ";", newline, …)
    sentence_end: bool  # the sentence ends after this token (".", "!", "?", ";", newline)
    closed: bool = False  # a closing quote or bracket follows ('… code 480517'}, "blue moon 42")


_CHUNK = re.compile(r"\S+")
_GLUED = re.compile(r"[:=]+")
_QUOTES = "\"'“”„«»‘’`"
_CLOSING = "\"'”»’`)]}>"
_TRAILING = ".,;!?" + _CLOSING
_DIGITS = re.compile(r"^\d+(?:[-/]\d+)*$")
_SECRETISH_SYMBOLS = set("!@#$%^&*_+=?~§&<>|\\/")


def _tokens(text: str) -> list[_Tok]:
    pieces: list[tuple[str, int]] = []
    for m in _CHUNK.finditer(text):
        chunk, start = m.group(), m.start()
        if "://" in chunk or not _GLUED.search(chunk):
            pieces.append((chunk, start))
            continue
        pos = 0  # "pw:Kitten77", "password=abc", "Apple-ID-Passwort:": the separator on its own
        for g in _GLUED.finditer(chunk):
            if g.start() > pos:
                pieces.append((chunk[pos : g.start()], start + pos))
            pieces.append((g.group(), start + g.start()))
            pos = g.end()
        if pos < len(chunk):
            pieces.append((chunk[pos:], start + pos))
    toks: list[_Tok] = []
    for i, (chunk, start) in enumerate(pieces):
        end = start + len(chunk)
        core_end = end
        while core_end > start + 1 and text[core_end - 1] in _TRAILING:
            core_end -= 1
        masked = chunk.find(MASK)
        if masked >= 0:  # an earlier "[redacted]" keeps its bracket: the gate is idempotent
            core_end = max(core_end, start + masked + len(MASK))
        mask_end = core_end  # "hunter2!" loses the "!" too
        while mask_end < end and text[mask_end] in "!?":
            mask_end += 1
        tail = text[core_end:end]
        nxt = pieces[i + 1][1] if i + 1 < len(pieces) else len(text)
        newline = "\n" in text[end:nxt] or nxt == len(text)
        closed = any(c in _CLOSING for c in tail)  # 'text': 'iPhone 13, code 480517'}}
        sentence_end = newline or closed or any(c in ".!?;" for c in tail)
        clause_end = sentence_end or "," in tail
        core = text[start:core_end]
        toks.append(_Tok(core, core.lower().strip(_QUOTES), start, core_end, mask_end, clause_end,
                         sentence_end, closed))
    return toks


def _has_letter(s: str) -> bool:
    return any(c.isalpha() for c in s)


def _secret_looking(tok: _Tok) -> bool:
    s = tok.text.strip(_QUOTES)
    if len(s) < 4 or s.lower() == MASK:
        return False
    letters = _has_letter(s)
    digits = any(c.isdigit() for c in s)
    symbols = any(c in _SECRETISH_SYMBOLS for c in s)
    if letters and (digits or symbols):
        return not re.fullmatch(r"[A-Za-z]{1,2}\d{3,5}", s)  # model numbers: A2634, MQ3E2 are fine
    return False


class Redactor:
    """The gate, compiled from a ``Vocabulary``."""

    def __init__(self, vocab: Vocabulary = VOCABULARY) -> None:
        self.v = vocab
        self._phrase_starts = frozenset(p.split()[0] for p in vocab.phrases)

    # -- keywords ---------------------------------------------------------------------
    def _keyword(self, toks: list[_Tok], i: int) -> tuple[str, int] | None:
        """('strong' | 'weak' | 'code', number of tokens) for a keyword starting at ``i``."""
        v = self.v
        for n in (3, 2) if toks[i].low in self._phrase_starts else ():
            if i + n <= len(toks) and not any(t.clause_end for t in toks[i : i + n - 1]):
                phrase = " ".join(t.low for t in toks[i : i + n])
                if phrase in v.phrases:
                    return ("code" if phrase.startswith("code") else "strong"), n
        w = toks[i].low
        for suffix in ("'s", "’s"):  # "my password's X": the "is" is glued on
            if w.endswith(suffix):
                w = w[: -len(suffix)]
        if not w or w in v.not_keywords:
            return None
        if w in v.code:
            return "code", 1
        if w in v.strong:
            return "strong", 1
        if w in v.weak:
            return ("code" if w == "pin" else "weak"), 1
        if w in v.not_code:
            return None
        if len(w) < 6:
            return None
        for suffix in v.code_suffixes:
            if w.endswith(suffix) and len(w) > len(suffix) + 2 and w.replace("-", "").isalpha():
                return ("code" if suffix in ("code", "pin") else "strong"), 1
        if len(w) >= 7 and w.isalpha():
            if any(OSA.distance(w, k) <= 1 for k in v.fuzzy if abs(len(k) - len(w)) <= 1):
                return "strong", 1
        return None

    def _error_context(self, toks: list[_Tok], i: int) -> bool:
        """A plain "code" that belongs to an error message ("error code 4013", "fails with code 9")
        or names another kind of code ("country code", "zip code")."""
        if i > 0 and not toks[i - 1].clause_end and toks[i - 1].low in self.v.other_codes:
            return True
        for j in range(i - 1, max(-1, i - 5), -1):
            if toks[j].sentence_end:
                return False
            if toks[j].low in self.v.error_context:
                return True
        return False

    # -- the secret after a keyword ---------------------------------------------------
    def _separator_at(self, toks: list[_Tok], j: int) -> int:
        """How many tokens the separator at ``j`` takes (0: none there)."""
        v = self.v
        if j + 1 < len(toks) and (toks[j].low, toks[j + 1].low) in v.separator_pairs:
            return 2
        return 1 if toks[j].low in v.separators else 0

    def _after_keyword(self, toks: list[_Tok], i: int, n: int, kind: str) -> list[tuple[int, int]]:
        v = self.v
        spans: list[tuple[int, int]] = []
        k = toks[i + n - 1]
        glued_is = k.low.endswith(("'s", "’s")) and not k.clause_end
        j = i + n
        # linker words between the keyword and its separator ("the password *i use* is")
        sep_at = j if glued_is else -1
        if not glued_is and not k.clause_end:
            probe = j
            while probe < len(toks) and probe - j <= 6:
                if self._separator_at(toks, probe):
                    sep_at = probe
                    break
                if toks[probe].low not in v.linkers or toks[probe].clause_end:
                    break
                probe += 1
        if sep_at >= 0:
            start = sep_at if glued_is else sep_at + self._separator_at(toks, sep_at)
            sep_tok = toks[start - 1] if start > 0 else None
            if sep_tok is not None and sep_tok.sentence_end:
                return spans
            while start < len(toks) and toks[start].low in (":", "-", "–", "=", "->") :
                start += 1
            while start < len(toks) and toks[start].low in v.hedges and not toks[start].clause_end:
                start += 1
            if start < len(toks):
                sep = toks[sep_at].low if not glued_is else "is"
                if sep in ("-", "–", "—"):  # a dash is often just a dash: one secret-looking word only
                    if _secret_looking(toks[start]) or toks[start].clause_end:
                        spans.append((toks[start].start, toks[start].mask_end))
                else:
                    spans += self._value(toks, start, worded=any(c.isalpha() for c in sep))
        elif j < len(toks) and not k.clause_end and _secret_looking(toks[j]):
            spans.append((toks[j].start, toks[j].mask_end))
        return spans

    def _value(self, toks: list[_Tok], start: int, worded: bool) -> list[tuple[int, int]]:
        """The secret starting at ``start``. After a worded separator ("is") a first word like
        "wrong" makes it a description; after ":" or "=" whatever follows is the value."""
        v = self.v
        first = toks[start]
        if first.text[:1] in _QUOTES and len(first.text) > 1:  # a quoted secret: up to the closing quote
            for e in range(start, min(len(toks), start + 12)):
                if toks[e].closed:
                    return [(first.start + 1, toks[e].end)]
        if first.low == MASK or (worded and first.low.strip(".,!?") in v.not_secret):
            return []
        nxt = toks[start + 1].low if start + 1 < len(toks) and not first.clause_end else ""
        if first.low in v.describes or nxt in v.describes:
            return []
        end = start
        while end + 1 < len(toks) and not toks[end].clause_end and end - start < 9:
            if toks[end + 1].low in v.clause_words:
                break
            end += 1
        return [(first.start, toks[end].mask_end)]

    # -- digit codes --------------------------------------------------------------------
    def _digit_codes(self, toks: list[_Tok], i: int, n: int) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        j = i + n
        limit = min(len(toks), j + 9)
        if toks[i + n - 1].sentence_end:
            return spans
        while j < limit:
            t = toks[j]
            if _DIGITS.match(t.text):
                run_end, digits = j, sum(c.isdigit() for c in t.text)
                while (run_end + 1 < len(toks) and not toks[run_end].clause_end
                       and _DIGITS.match(toks[run_end + 1].text) and len(toks[run_end + 1].text) <= 3
                       and len(toks[run_end].text) <= 3):
                    run_end += 1
                    digits += sum(c.isdigit() for c in toks[run_end].text)
                if 4 <= digits <= 8 and not self._number_excused(toks, j, run_end):
                    spans.append((t.start, toks[run_end].mask_end))
                j = run_end
            if toks[j].sentence_end:
                break
            j += 1
        return spans

    def _number_excused(self, toks: list[_Tok], first: int, last: int) -> bool:
        v = self.v
        prev = toks[first - 1].low if first > 0 and not toks[first - 1].clause_end else ""
        after = toks[last + 1].low if last + 1 < len(toks) and not toks[last].clause_end else ""
        if prev in v.number_context or after in v.units or prev.startswith("+"):  # +44 7700 900123
            return True
        word = toks[first].text
        if len(word) == 4 and word[:2] in ("19", "20") and prev in v.year_context:
            return True
        return False

    # -- "X is my password" ---------------------------------------------------------------
    def _before_keyword(self, toks: list[_Tok], i: int) -> list[tuple[int, int]]:
        v = self.v
        if i < 3:
            return []
        secret, verb, owner = toks[i - 3], toks[i - 2], toks[i - 1]
        if secret.clause_end or verb.clause_end or owner.clause_end:
            return []
        if verb.low not in v.backward_verbs or owner.low not in v.backward_owners:
            return []
        if secret.low in v.not_secret or not (_secret_looking(secret) or _DIGITS.match(secret.text)):
            return []
        return [(secret.start, secret.mask_end)]

    # -- the gate -----------------------------------------------------------------------
    def spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans of the secrets in ``text``, sorted, not overlapping."""
        toks = _tokens(text)
        found: list[tuple[int, int]] = []
        i = 0
        while i < len(toks):
            kw = self._keyword(toks, i)
            if kw is None:
                if toks[i].low in self.v.unlock:
                    found += self._digit_codes(toks, i, 1)
                i += 1
                continue
            kind, n = kw
            if kind == "code" and toks[i].low in ("code", "codes") and self._error_context(toks, i):
                i += n
                continue
            found += self._after_keyword(toks, i, n, kind)
            if kind != "weak":
                found += self._digit_codes(toks, i, n)
            found += self._before_keyword(toks, i)
            i += n
        return _merge(found)

    def redact(self, text: str) -> tuple[str, bool]:
        spans = self.spans(text)
        if not spans:
            return text, False
        out, pos = [], 0
        for a, b in spans:
            out.append(text[pos:a])
            out.append(MASK)
            pos = b
        out.append(text[pos:])
        return "".join(out), True


def _merge(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


_DEFAULT = Redactor()


# Every keyword (and every keyword with one typo) contains one of these: a text without any
# is let through at once (most messages; the log filter sees every line).
_STEMS = re.compile(r"pas|pw|psw|wor|kenn|cod|códig|pin|contr|señ|sen|clav|mdp|lock|sperr|bloq|verrou", re.IGNORECASE)


def redact(text: str) -> tuple[str, bool]:
    """Return (text with secrets masked, whether a secret was found)."""
    if not text or not _STEMS.search(text):
        return text, False
    return _DEFAULT.redact(text)


_CLAUSE_SPLIT = re.compile(r"[,;.!?]+(?=\s|$)|\s[-–—]\s")


def strip_secrets(text: str) -> str:
    """A redacted answer without the clauses that held a secret, for a form field:
    "iPhone 13, code [redacted]" -> "iPhone 13"; "" when nothing else was said."""
    parts = [p.strip() for p in _CLAUSE_SPLIT.split(text)]
    return ", ".join(p for p in parts if p and MASK not in p)


def screen(inbound: Inbound) -> tuple[Inbound, bool]:
    """The inbound event with every text the user sent through the gate: the message or caption
    (control characters dropped first, so none can hide a keyword), a command's argument, a
    button payload (doors pass it through unchecked) and attachment names. Returns the event
    and whether a secret was removed."""
    found = False

    def gate(text: str) -> str:
        nonlocal found
        out, hit = redact(clean_text(text)) if text else (text, False)
        found = found or hit or MASK in out  # a door may have applied the gate already
        return out

    text, arg, payload = gate(inbound.text), gate(inbound.arg), gate(inbound.payload)
    atts = tuple(replace(a, name=gate(a.name)) if a.name else a for a in inbound.attachments)
    if not found and (text, arg, payload) == (inbound.text, inbound.arg, inbound.payload):
        return inbound, False
    return replace(inbound, text=text, arg=arg, payload=payload, attachments=atts), found


PAYLOAD_TEXT_KEYS = ("text", "caption")


def gate_text(text: str) -> str:
    """One text through the gate: control characters dropped, then secrets masked."""
    return redact(clean_text(text))[0]


def redact_payload(obj: Any, gate: Callable[[str], str] = gate_text) -> Any:
    """A door's raw update (JSON-like dicts and lists) with the gate applied to every ``text``
    and ``caption``: for a door that stores what arrives before the engine reads it. The
    engine still warns the user (``screen`` counts a mask it finds as a secret). ``gate``: the
    gate on one text (a door may memoise it for texts it wrote itself)."""
    if isinstance(obj, dict):
        return {k: (gate(v) if k in PAYLOAD_TEXT_KEYS and isinstance(v, str) and v
                    else redact_payload(v, gate)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact_payload(v, gate) for v in obj]
    return obj
