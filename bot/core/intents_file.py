"""The intent library file (``content/<lang>/intents.yaml``): read and validated.

:func:`parse_library` returns the library (or every problem, each naming the file and key);
:func:`validate_intents` only the problems (``python -m bot check``). The intent ids, the
out-of-scope class and the small-talk kinds are fixed here; the matcher (``bot.core.matcher``)
builds its indexes from what this returns. No scoring here, no network, no store.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bot.core.errors import Problem
from bot.core.normalize import Normalizer

# The C build of the *safe* loader when available (same semantics as yaml.safe_load).
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

INTENT_IDS: tuple[str, ...] = (
    "storage_full",
    "backup_failed",
    "backup_stuck",
    "backup_empty",
    "backup_outdated",
    "restore_failed",
    "network_issue",
    "apple_id_issue",
    "server_status",
    "check_backup",
    "free_storage",
    "storage_plans",
    "local_backup",
    "recover_deleted",
    "device_damaged",
    "locked_out",
    "third_party_tools",
    "prevention",
    "recovery_cost",
    "quote_request",
    "human_agent",
)
NONE = "none"
SMALLTALK_KINDS: tuple[str, ...] = ("greeting", "thanks", "bye", "help")

MIN_EXAMPLES = 5
MAX_KEYWORD_WEIGHT = 10.0


@dataclass
class Library:
    intents: dict[str, dict[str, Any]]
    oos: dict[str, Any]
    smalltalk: dict[str, list[str]]
    filler: list[str]
    raw: dict[str, list[str]]  # text -> Normalizer.raw_tokens(text), computed once


class CachingNormalizer(Normalizer):
    """A Normalizer that remembers the folded tokens of whole texts (used while loading)."""

    def __init__(self, known: Iterable[str] = (), raw: dict[str, list[str]] | None = None) -> None:
        super().__init__(known)
        self.raw: dict[str, list[str]] = {} if raw is None else raw

    def tokens(self, text: str) -> list[str]:
        raw = self.raw.get(text)
        if raw is None:
            raw = self.raw[text] = Normalizer.raw_tokens(text)
        return self.map_tokens(raw)


def _problem(path: Path, key: str, msg: str) -> Problem:
    return Problem(str(path), key, msg)


def _check_weights(
    path: Path, key: str, value: Any, norm: Normalizer, problems: list[Problem]
) -> dict[str, float]:
    out: dict[str, float] = {}
    if value is None:
        return out
    if not isinstance(value, dict):
        problems.append(_problem(path, key, "must be a mapping of phrase: weight"))
        return out
    for phrase, weight in value.items():
        k = f"{key}.{phrase}"
        if not isinstance(phrase, str):
            problems.append(_problem(path, k, "keyword must be a string (quote yes/no/on/off)"))
            continue
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            problems.append(_problem(path, k, f"weight must be a number, got {weight!r}"))
            continue
        if not (0 < float(weight) <= MAX_KEYWORD_WEIGHT) or math.isnan(float(weight)):
            problems.append(
                _problem(path, k, f"weight must be in (0, {MAX_KEYWORD_WEIGHT:g}], got {weight}")
            )
            continue
        if not keyword_words(phrase, norm):
            problems.append(_problem(path, k, "keyword is empty after normalisation"))
            continue
        out[phrase] = float(weight)
    return out


def keyword_words(phrase: str, norm: Normalizer) -> tuple[str, ...]:
    """Normalise a keyword phrase, keeping a trailing "*" prefix marker per word."""
    out: list[str] = []
    for raw in phrase.split():
        prefix = raw.endswith("*") and len(raw) > 1
        toks = norm.tokens(raw[:-1] if prefix else raw)
        if not toks:
            continue
        if prefix:
            toks[-1] = toks[-1] + "*"
        out.extend(toks)
    if not out and phrase.strip() == "%":
        out = ["%"]
    return tuple(out)


def _check_examples(
    path: Path, key: str, value: Any, norm: Normalizer, problems: list[Problem]
) -> list[str]:
    if not isinstance(value, list) or not value:
        problems.append(_problem(path, key, "must be a non-empty list of phrases"))
        return []
    out: list[str] = []
    for i, ex in enumerate(value):
        if not isinstance(ex, str) or not ex.strip():
            problems.append(_problem(path, f"{key}[{i}]", "example must be a non-empty string"))
            continue
        if not norm.tokens(ex):
            problems.append(_problem(path, f"{key}[{i}]", "example is empty after normalisation"))
            continue
        out.append(ex)
    if len(out) < MIN_EXAMPLES:
        problems.append(_problem(path, key, f"needs at least {MIN_EXAMPLES} examples"))
    return out


def parse_library(path: Path) -> tuple[Library | None, list[Problem]]:
    """Read and validate the library; returns (library or None, problems)."""
    path = Path(path)
    problems: list[Problem] = []
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_SafeLoader)
    except OSError as exc:
        return None, [_problem(path, "", f"cannot read: {exc}")]
    except yaml.YAMLError as exc:
        return None, [_problem(path, "", f"invalid YAML: {exc}")]
    if not isinstance(raw, dict):
        return None, [_problem(path, "", "top level must be a mapping")]
    norm = CachingNormalizer()
    intents_raw = raw.get("intents")
    if not isinstance(intents_raw, dict):
        return None, [_problem(path, "intents", "missing or not a mapping")]

    intents: dict[str, dict[str, Any]] = {}
    for iid, body in intents_raw.items():
        key = f"intents.{iid}"
        if iid not in INTENT_IDS:
            problems.append(_problem(path, key, "unknown intent id"))
            continue
        if not isinstance(body, dict):
            problems.append(_problem(path, key, "must be a mapping"))
            continue
        for extra in set(body) - {"description", "keywords", "require", "negative", "examples"}:
            problems.append(_problem(path, f"{key}.{extra}", "unknown field"))
        kws = _check_weights(path, f"{key}.keywords", body.get("keywords"), norm, problems)
        if not kws:
            problems.append(_problem(path, f"{key}.keywords", "needs at least one keyword"))
        neg = _check_weights(path, f"{key}.negative", body.get("negative"), norm, problems)
        req_raw = body.get("require") or []
        require: list[list[str]] = []
        if not isinstance(req_raw, list):
            problems.append(_problem(path, f"{key}.require", "must be a list of lists"))
        else:
            for gi, group in enumerate(req_raw):
                if (
                    not isinstance(group, list)
                    or not group
                    or not all(isinstance(p, str) and keyword_words(p, norm) for p in group)
                ):
                    problems.append(
                        _problem(path, f"{key}.require[{gi}]", "must be a list of phrases")
                    )
                    continue
                require.append(group)
        examples = _check_examples(path, f"{key}.examples", body.get("examples"), norm, problems)
        desc = body.get("description", "")
        if not isinstance(desc, str):
            problems.append(_problem(path, f"{key}.description", "must be a string"))
            desc = ""
        intents[iid] = {
            "description": desc,
            "keywords": kws,
            "negative": neg,
            "require": require,
            "examples": examples,
        }
    for iid in INTENT_IDS:
        if iid not in intents_raw:
            problems.append(_problem(path, f"intents.{iid}", "missing intent"))

    oos_raw = raw.get("out_of_scope")
    oos: dict[str, Any] = {"keywords": {}, "examples": []}
    if not isinstance(oos_raw, dict):
        problems.append(_problem(path, "out_of_scope", "missing or not a mapping"))
    else:
        oos["keywords"] = _check_weights(
            path, "out_of_scope.keywords", oos_raw.get("keywords"), norm, problems
        )
        oos["examples"] = _check_examples(
            path, "out_of_scope.examples", oos_raw.get("examples"), norm, problems
        )

    st_raw = raw.get("smalltalk")
    smalltalk: dict[str, list[str]] = {}
    filler: list[str] = []
    if not isinstance(st_raw, dict):
        problems.append(_problem(path, "smalltalk", "missing or not a mapping"))
    else:
        for kind in SMALLTALK_KINDS:
            items = st_raw.get(kind)
            if (
                not isinstance(items, list)
                or not items
                or not all(isinstance(x, str) and norm.tokens(x) for x in items)
            ):
                problems.append(
                    _problem(path, f"smalltalk.{kind}", "must be a non-empty list of phrases")
                )
                continue
            smalltalk[kind] = items
        fill = st_raw.get("filler", [])
        if not isinstance(fill, list) or not all(isinstance(x, str) for x in fill):
            problems.append(_problem(path, "smalltalk.filler", "must be a list of words"))
        else:
            filler = fill
        for extra in set(st_raw) - set(SMALLTALK_KINDS) - {"filler"}:
            problems.append(_problem(path, f"smalltalk.{extra}", "unknown small-talk kind"))

    # The same phrase may not teach two classes.
    seen: dict[str, str] = {}
    for iid, body in intents.items():
        for i, ex in enumerate(body["examples"]):
            n = norm.normalize(ex)
            other = seen.get(n)
            if other is not None and other != iid:
                problems.append(
                    _problem(path, f"intents.{iid}.examples[{i}]", f"also an example of {other}")
                )
            seen[n] = iid
    for i, ex in enumerate(oos["examples"]):
        n = norm.normalize(ex)
        if n in seen and seen[n] != NONE:
            problems.append(
                _problem(path, f"out_of_scope.examples[{i}]", f"also an example of {seen[n]}")
            )
        seen[n] = NONE

    if problems:
        return None, problems
    return Library(intents, oos, smalltalk, filler, norm.raw), []


def validate_intents(path: Path) -> list[Problem]:
    """Every problem in the intents file (empty list when it is usable)."""
    return parse_library(Path(path))[1]
