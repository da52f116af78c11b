"""Assembles the parts: content + flows + matcher (validated), the store, the engine.

Every door (terminal, Telegram, benchmarks, tests) starts the bot through here, so a
bad content file fails the same way everywhere: at start, with file and key named.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.core.actions import ACTIONS
from bot.core.answers import AnswerBook, load_answers
from bot.core.content import Content, load_content
from bot.core.engine import Engine
from bot.core.errors import ContentError, Problem
from bot.core.flows import FlowSet, load_flows, validate_flows
from bot.core.matcher import Matcher, validate_intents
from bot.core.semantic import load_encoder
from bot.store import SQLiteStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Knowledge:
    """Everything loaded from content/ and flows/."""

    content: Content
    flows: FlowSet
    matcher: Matcher


def check(content_dir: Path, flows_dir: Path, lang: str = "en",
          extra_actions: dict[str, tuple[str, ...]] | None = None,
          semantic: bool = False) -> tuple[Knowledge | None, list[Problem]]:
    """Load and validate everything; return the loaded parts (if usable) and every problem.

    ``semantic`` loads the MiniLM model into the matcher (the bot runs with it; ``check``
    itself does not need it). A model that cannot load is logged and left out.
    """
    content, problems = load_content(content_dir, lang)
    flows, flow_problems = load_flows(flows_dir)
    problems += flow_problems
    intents_path = content_dir / lang / "intents.yaml"
    intent_problems = validate_intents(intents_path)
    problems += intent_problems
    matcher = None
    if not intent_problems:
        try:
            matcher = Matcher.load(intents_path, load_encoder() if semantic else None)
        except ContentError as exc:
            problems += exc.problems
    if matcher is not None:
        cards, card_problems = load_answers(content_dir / lang / "answers.yaml", content, matcher.intents)
        problems += card_problems
        if not card_problems:
            matcher.attach_answers(AnswerBook(cards, matcher.encoder))
    actions = {name: branches for name, (_, branches) in ACTIONS.items()}
    actions.update(extra_actions or {})
    if matcher is not None:
        problems += validate_flows(flows, content, matcher.intents, actions)
    if matcher is None:
        return None, problems
    return Knowledge(content, flows, matcher), problems


def plugin_branches() -> dict[str, tuple[str, ...]]:
    from bot.plugins import plugin_actions

    return {name: branches for name, (_, branches) in plugin_actions().items()}


def load_knowledge(content_dir: Path, flows_dir: Path, lang: str = "en",
                   extra_actions: dict[str, tuple[str, ...]] | None = None) -> Knowledge:
    knowledge, problems = check(content_dir, flows_dir, lang, extra_actions, semantic=True)
    if problems or knowledge is None:
        raise ContentError(problems)
    return knowledge


@dataclass
class Runtime:
    knowledge: Knowledge
    store: SQLiteStore
    engine: Engine
    closers: list = field(default_factory=list)
    learning: Any = None  # bot.learning.LearnedSync: agents' examples, read live

    async def close(self) -> None:
        for closer in reversed(self.closers):
            await closer()
        await self.store.close()


async def open_runtime(db_path: str, content_dir: Path, flows_dir: Path, lang: str = "en") -> Runtime:
    from bot.plugins import plugin_actions, plugin_commands

    knowledge = load_knowledge(content_dir, flows_dir, lang, plugin_branches())
    store = await SQLiteStore.open(db_path)
    engine = Engine(knowledge.content, knowledge.flows, knowledge.matcher, store,
                    extra_actions=plugin_actions(store), commands=plugin_commands(store))
    runtime = Runtime(knowledge, store, engine)
    # examples agents taught (python -m bot learn import, the group's /unmatched): live
    from bot.learning import LearnedSync
    from bot.store.learned import LearnedStore

    sync = LearnedSync(LearnedStore(store), knowledge.matcher)
    await sync.refresh()
    sync.start()
    runtime.closers.append(sync.stop)
    runtime.learning = sync
    return runtime
