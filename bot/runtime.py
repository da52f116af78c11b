"""Assembles the parts: content + flows + matcher (validated), the store, the engine, and the
features — the one runtime factory every door, benchmark and test starts the bot with.

A bad content file fails the same way everywhere: at start, with file and key named.

The feature seam. A feature (the quote request, the agents' desk) is an object with:

* ``name`` — for logs, and the owner of its tables;
* ``migrations()`` — its own schema, in order (``Database.migrate(name, ...)``, run by
  ``open_runtime`` before anything else touches the database);
* ``actions()`` / ``commands()`` — the flow actions (``do:``) and slash commands it adds to
  the engine; ``required_texts()`` — content keys its code uses (``python -m bot check``);
* ``bind(core)`` — called once by ``open_runtime`` with the engine and the store, before
  any turn: from then on its actions and commands work (nothing runs in the background);
* ``start(ports)`` — its background work (the outbox worker, the desk's mirror), with what
  the door running the bot offers (``Ports``); ``close()`` — stops it. ``Runtime.start`` /
  ``Runtime.close`` call them in order / in reverse order.

A feature owns its state: there are no module-level registries; two runtimes in one
process (tests) share nothing. Features that need each other are wired by whoever builds
the list (``bot.features.standard_features``), never looked up.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from bot.config import Settings
from bot.core.actions import ACTIONS, ActionFn
from bot.core.answers import AnswerBook, load_answers
from bot.core.content import Content, load_content
from bot.core.engine import CommandFn, Engine
from bot.core.errors import ContentError, Problem
from bot.core.flowcheck import validate_flows
from bot.core.flows import FlowSet, load_flows
from bot.core.matcher import Matcher, validate_intents
from bot.core.semantic import load_encoder
from bot.learning import LearnedSync
from bot.store import SQLiteStore, open_store
from bot.store.leader import Leadership, SoleLeader
from bot.store.learned import LearnedStore

if TYPE_CHECKING:  # types only: the features' port protocols (no import at run time)
    from bot.agents.ports import GroupGateway
    from bot.escalation.ports import Alerter, FileFetcher, LabNotifier
    from bot.store.pgstore import PostgresStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Knowledge:
    """Everything loaded from content/ and flows/."""

    content: Content
    flows: FlowSet
    matcher: Matcher


@dataclass(frozen=True)
class Core:
    """What a feature is bound to: the engine (and through it content and flows), the store."""

    engine: Engine
    store: SQLiteStore | PostgresStore
    # which process does the work that must happen once (the agents' group writer, timers,
    # retention) when several share one database; SQLite: this one, always
    leadership: Leadership = field(default_factory=SoleLeader)

    @property
    def content(self) -> Content:
        return self.engine.content


@dataclass(frozen=True)
class Ports:
    """What the door running the bot offers the features; None where it has none (the
    terminal has no Telegram). Built by the door, passed to ``Runtime.start``."""

    file_fetcher: FileFetcher | None = None  # downloads a photo a user sent (quotes)
    lab_chat: LabNotifier | None = None  # the lab's Telegram chat (quotes, LAB_CHAT_ID)
    alerter: Alerter | None = None  # where delivery failures go (the agents' chat; else the log)
    agents_group: GroupGateway | None = None  # the agents' forum group (AGENT_CHAT_ID)


class Feature(Protocol):
    name: str

    def migrations(self) -> Sequence[str]: ...
    def actions(self) -> Mapping[str, tuple[ActionFn, tuple[str, ...]]]: ...
    def commands(self) -> Mapping[str, CommandFn]: ...
    def required_texts(self) -> Sequence[str]: ...
    def bind(self, core: Core) -> None: ...
    async def start(self, ports: Ports) -> None: ...
    async def close(self) -> None: ...


def feature_branches(features: Sequence[Feature]) -> dict[str, tuple[str, ...]]:
    """Every feature action's declared branches (what ``check`` validates flows against)."""
    return {name: branches for f in features for name, (_, branches) in f.actions().items()}


def check(content_dir: Path, flows_dir: Path, lang: str = "en",
          features: Sequence[Feature] = (), semantic: bool = False,
          settings: Settings | None = None) -> tuple[Knowledge | None, list[Problem]]:
    """Load and validate everything; return the loaded parts (if usable) and every problem.

    ``semantic`` loads the MiniLM model into the matcher (the bot runs with it; ``check``
    itself does not need it), unless ``settings.semantic`` is off; its vectors are cached in
    ``settings.cache_dir``. A model that cannot load is logged and left out.
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
            cfg = settings or Settings()
            encoder = load_encoder(enabled=cfg.semantic, cache_dir=cfg.cache_dir) if semantic else None
            matcher = Matcher.load(intents_path, encoder)
        except ContentError as exc:
            problems += exc.problems
    if matcher is not None:
        cards, card_problems = load_answers(content_dir / lang / "answers.yaml", content, matcher.intents)
        problems += card_problems
        if not card_problems:
            matcher.attach_answers(AnswerBook(cards, matcher.encoder))
    actions = {name: branches for name, (_, branches) in ACTIONS.items()}
    actions.update(feature_branches(features))
    if matcher is not None:
        problems += validate_flows(flows, content, matcher.intents, actions)
    for f in features:
        problems += [Problem(f"content/{lang}/", key, f"required text missing (used by the {f.name} feature)")
                     for key in f.required_texts() if not content.has(key)]
    if matcher is None:
        return None, problems
    return Knowledge(content, flows, matcher), problems


def load_knowledge(content_dir: Path, flows_dir: Path, lang: str = "en",
                   features: Sequence[Feature] = (), settings: Settings | None = None) -> Knowledge:
    knowledge, problems = check(content_dir, flows_dir, lang, features, semantic=True, settings=settings)
    if problems or knowledge is None:
        raise ContentError(problems)
    return knowledge


@dataclass
class Runtime:
    knowledge: Knowledge
    store: SQLiteStore | PostgresStore
    engine: Engine
    features: tuple[Feature, ...] = ()
    owns_store: bool = True
    _started: list[Feature] = field(default_factory=list)
    learning: LearnedSync | None = None  # agents' examples (learn import, /unmatched), read live
    leadership: Leadership = field(default_factory=SoleLeader)  # see Core.leadership

    async def start(self, ports: Ports | None = None) -> None:
        """Start the features' background work, in order (a door calls this once it can offer
        its ports). If one fails, those already started are closed again."""
        ports = ports or Ports()
        await self.leadership.start()  # competes from now on (SQLite: leads at once)
        for f in self.features:
            if f in self._started:
                continue
            try:
                await f.start(ports)
            except BaseException:
                await self.stop()
                raise
            self._started.append(f)

    async def stop(self) -> None:
        """Stop the features' background work, in reverse order (the store stays open)."""
        started, self._started = self._started, []
        for f in reversed(started):
            try:
                await f.close()
            except Exception:  # one feature failing to stop must not keep the others running
                log.exception("stopping the %s feature failed", f.name)

    async def close(self) -> None:
        await self.stop()
        await self.leadership.close()  # a leader gives the lock up: another process takes over
        if self.learning is not None:
            await self.learning.stop()
        if self.owns_store:
            await self.store.close()


async def open_runtime(db: str | Path | SQLiteStore | PostgresStore, content_dir: Path, flows_dir: Path,
                       lang: str = "en", *, features: Sequence[Feature] = (), knowledge: Knowledge | None = None,
                       settings: Settings | None = None, leadership: Leadership | None = None) -> Runtime:
    """The bot, assembled: knowledge loaded and validated (or ``knowledge`` as given), the
    store opened (``db``: a SQLite path or a ``postgresql://`` URL — pool size and timeouts
    from ``settings`` — or an open store, which the caller closes), the engine with every
    feature's actions and commands, each feature bound. Nothing runs in the background until
    ``Runtime.start`` (which also starts competing for ``leadership``: ``bot.store.leader``;
    default: this process leads)."""
    leadership = leadership or SoleLeader()
    knowledge = knowledge or load_knowledge(content_dir, flows_dir, lang, features, settings)
    owns = isinstance(db, (str, Path))
    store = await open_store(db, settings) if isinstance(db, (str, Path)) else db
    try:
        for f in features:
            await store.database.migrate(f.name, f.migrations())
    except BaseException:
        if owns:
            await store.close()
        raise
    actions: dict[str, tuple[ActionFn, tuple[str, ...]]] = {}
    commands: dict[str, CommandFn] = {}
    for f in features:
        actions.update(f.actions())
        commands.update(f.commands())
    engine = Engine(knowledge.content, knowledge.flows, knowledge.matcher, store,
                    extra_actions=actions, commands=commands)
    core = Core(engine, store, leadership)
    for f in features:
        f.bind(core)
    runtime = Runtime(knowledge, store, engine, tuple(features), owns_store=owns, leadership=leadership)
    # examples agents taught (python -m bot learn import, the group's /unmatched): live
    sync = LearnedSync(LearnedStore(store), knowledge.matcher)
    await sync.refresh()
    sync.start()
    runtime.learning = sync
    return runtime
