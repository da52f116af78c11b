"""Loads content/: texts (per language, dotted keys) and language-neutral facts.

The engine asks this module for every word it says; no user-facing text lives in Python.
Problems are collected (file and key named) rather than raised one at a time, so
``python -m bot check`` can list them all.
"""

from __future__ import annotations

import logging
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ContentError, Problem

log = logging.getLogger(__name__)

# Keys the code itself uses. Flow texts are checked through the flows that name them.
REQUIRED_KEYS: tuple[str, ...] = (
    "engine.greeting",  # /start: who we are, what to do
    "engine.help",  # /help: commands and how to talk to the bot
    "engine.not_understood",  # reject: honest, then the main menu follows
    "engine.not_understood_step",  # mid-step text that is neither a button nor an intent
    "engine.suggest",  # suggest: "Did you mean one of these?"
    "engine.something_else",  # button label: none of the suggestions
    "engine.switch_offer",  # mid-flow accept of another topic; uses {title}
    "engine.switch_yes",  # button label
    "engine.switch_no",  # button label
    "engine.stale_button",  # a press from an earlier step
    "engine.cancelled",  # /cancel
    "engine.restarted",  # /restart
    "engine.back_none",  # /back with nowhere to go
    "engine.unknown_command",  # /whatever
    "engine.password_warning",  # the user typed a password or passcode
    "engine.media_only_text",  # a photo/voice/sticker where text is needed
    "engine.empty_message",  # nothing readable in the message
    "engine.truncated",  # a very long message: only the start was read
    "engine.photo_too_big",  # a photo over Telegram's 20 MB download limit in a photo step
    "engine.internal_error",  # a door's error handler: something went wrong, try /restart
    "engine.yes_words",  # comma-separated words that mean "yes" to a yes/no step
    "engine.no_words",  # comma-separated words that mean "no"
    "engine.exact_words",  # yes/no words that count only as the whole message ("ok", not "ok but...")
    "engine.smalltalk.greeting",
    "engine.smalltalk.thanks",
    "engine.smalltalk.bye",
    "facts.plan_row",
    "facts.cost_row",
    "telegram.edited_message",  # the door ignores edits and says so
    "telegram.private_only",  # said once in a group before the bot leaves; uses {bot}
    *(f"commands.{name}" for name in ("start", "help", "restart", "back", "cancel", "quote", "status",
                                      "privacy", "forget")),  # the Telegram command menu
)

_FIELD_RE = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)}")


@dataclass(frozen=True)
class Plan:
    id: str
    name: str
    storage: str
    gb: float
    price: str


@dataclass(frozen=True)
class CostRow:
    id: str
    price: str
    days: str


@dataclass(frozen=True)
class Facts:
    plans: tuple[Plan, ...]
    costs: tuple[CostRow, ...]
    links: dict[str, str]
    numbers: dict[str, str] = field(default_factory=dict)  # single figures by key (answer cards)


@dataclass(frozen=True)
class Content:
    """Texts of one language plus the facts. ``text(key, **values)`` renders one."""

    lang: str
    texts: dict[str, str]
    facts: Facts
    sources: dict[str, str]  # key -> file it came from (for error messages)

    def has(self, key: str) -> bool:
        return key in self.texts

    def raw(self, key: str) -> str:
        return self.texts[key]

    def fields(self, key: str) -> set[str]:
        return set(_FIELD_RE.findall(self.texts.get(key, "")))

    def text(self, key: str, values: dict[str, str] | None = None) -> str:
        """Render ``key`` with collected values and the rendered fact tables."""
        template = self.texts[key]
        if "{" not in template:
            return template
        env = _SafeDict(self.rendered_facts())
        if values:
            env.update(values)
        return string.Formatter().vformat(template, (), env)

    def words(self, key: str) -> tuple[str, ...]:
        """A comma-separated word list (e.g. ``engine.yes_words``), lower-cased."""
        return tuple(w.strip().lower() for w in self.texts.get(key, "").split(",") if w.strip())

    def rendered_facts(self) -> dict[str, str]:
        cached = _RENDER_CACHE.get(id(self))
        if cached is not None:
            return cached
        plan_rows = [
            self.texts["facts.plan_row"].format(name=p.name, storage=p.storage, price=p.price)
            for p in self.facts.plans
        ]
        cost_rows = [
            self.texts["facts.cost_row"].format(
                label=self.texts.get(f"facts.damage.{c.id}", c.id), price=c.price, days=c.days
            )
            for c in self.facts.costs
        ]
        out = {"plans_table": "\n".join(plan_rows), "costs_table": "\n".join(cost_rows)}
        out.update(self.facts.links)
        out.update(fact_values(self.facts))
        _RENDER_CACHE[id(self)] = out
        return out


_RENDER_CACHE: dict[int, dict[str, str]] = {}


def fact_values(facts: Facts) -> dict[str, str]:
    """Every single fact by key: plan_<id>_{name,storage,price}, cost_<id>_{price,days}, numbers."""
    out: dict[str, str] = {}
    for p in facts.plans:
        out.update({f"plan_{p.id}_name": p.name, f"plan_{p.id}_storage": p.storage,
                    f"plan_{p.id}_price": p.price})
    for c in facts.costs:
        out.update({f"cost_{c.id}_price": c.price, f"cost_{c.id}_days": c.days})
    out.update(facts.numbers)
    return out


class _SafeDict(dict[str, str]):
    """Leaves an unknown ``{field}`` as it is instead of raising (check reports it)."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _flatten(node: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    else:
        out[prefix] = node


def _load_yaml(path: Path, problems: list[Problem]) -> Any:
    try:
        with path.open(encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except OSError as exc:
        problems.append(Problem(str(path), "-", f"cannot read: {exc.strerror}"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "-"
        problems.append(Problem(str(path), where, f"invalid YAML: {exc}"))
    return None


def _load_facts(path: Path, problems: list[Problem]) -> Facts:
    data = _load_yaml(path, problems) or {}
    plans: list[Plan] = []
    costs: list[CostRow] = []
    links: dict[str, str] = {}
    if not isinstance(data, dict):
        problems.append(Problem(str(path), "-", "must be a mapping"))
        return Facts((), (), {}, {})
    for i, row in enumerate(data.get("plans") or []):
        try:
            plans.append(
                Plan(str(row["id"]), str(row["name"]), str(row["storage"]), float(row["gb"]),
                     str(row["price"]))
            )
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(Problem(str(path), f"plans[{i}]", f"bad plan row: {exc}"))
    for i, row in enumerate(data.get("recovery_costs") or []):
        try:
            costs.append(CostRow(str(row["id"]), str(row["price"]), str(row["days"])))
        except (KeyError, TypeError) as exc:
            problems.append(Problem(str(path), f"recovery_costs[{i}]", f"bad cost row: {exc}"))
    for k, v in (data.get("links") or {}).items():
        links[str(k)] = str(v)
    numbers: dict[str, str] = {}
    raw_numbers = data.get("numbers") or {}
    if not isinstance(raw_numbers, dict):
        problems.append(Problem(str(path), "numbers", "must be a mapping of key: value"))
        raw_numbers = {}
    for k, v in raw_numbers.items():
        if not isinstance(v, (str, int, float)) or isinstance(v, bool) or not str(v).strip():
            problems.append(Problem(str(path), f"numbers.{k}", "must be a non-empty value"))
            continue
        numbers[str(k)] = str(v)
    if not plans:
        problems.append(Problem(str(path), "plans", "no storage plans"))
    if [p.gb for p in plans] != sorted(p.gb for p in plans):
        problems.append(Problem(str(path), "plans", "plans must be listed smallest first"))
    if not costs:
        problems.append(Problem(str(path), "recovery_costs", "no recovery cost rows"))
    return Facts(tuple(plans), tuple(costs), links, numbers)


def load_content(root: Path, lang: str = "en") -> tuple[Content, list[Problem]]:
    """Load ``root/facts.yaml`` and ``root/<lang>/*.yaml`` (except intents.yaml)."""
    problems: list[Problem] = []
    facts = _load_facts(root / "facts.yaml", problems)
    texts: dict[str, str] = {}
    sources: dict[str, str] = {}
    lang_dir = root / lang
    if not lang_dir.is_dir():
        problems.append(Problem(str(lang_dir), "-", "language folder missing"))
    for path in sorted(lang_dir.glob("*.yaml")) if lang_dir.is_dir() else ():
        if path.name in ("intents.yaml", "answers.yaml"):  # the matcher's and the answer cards' own files
            continue
        data = _load_yaml(path, problems)
        if data is None:
            continue
        flat: dict[str, Any] = {}
        _flatten(data, "", flat)
        for key, value in flat.items():
            if key in texts:
                problems.append(Problem(str(path), key, f"also defined in {sources[key]}"))
                continue
            if not isinstance(value, str) or not value.strip():
                problems.append(Problem(str(path), key, "must be a non-empty string"))
                continue
            texts[key] = value.strip("\n")
            sources[key] = str(path)
    content = Content(lang, texts, facts, sources)
    for key in REQUIRED_KEYS:
        if key not in texts:
            problems.append(Problem(str(lang_dir), key, "required text missing"))
    for key in ("facts.plan_row", "facts.cost_row"):
        if key in texts:
            try:
                content.rendered_facts()
            except (KeyError, IndexError, ValueError) as exc:
                problems.append(Problem(sources[key], key, f"bad template: {exc}"))
            break
    for c in facts.costs:
        if f"facts.damage.{c.id}" not in texts:
            problems.append(Problem(str(lang_dir), f"facts.damage.{c.id}", "damage label missing"))
    for key, value in texts.items():
        if len(value) > 4000:
            problems.append(Problem(sources[key], key, "longer than 4000 characters"))
    return content, problems


def load_content_or_raise(root: Path, lang: str = "en") -> Content:
    content, problems = load_content(root, lang)
    if problems:
        raise ContentError(problems)
    return content
