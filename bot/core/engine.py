"""The engine: one inbound event for one conversation in, channel-neutral replies out.

It owns the conversation: runs the flows in flows/, asks the matcher what free text
means, validates typed values, and writes the new state and the transcript through the
store port in one transaction per turn. It never touches the network. Doors (terminal,
Telegram) translate to and from the types in ``messages``; tests drive it directly.

Button ids sent to doors are ``<seq>:<id>``: a press whose seq is not the current one
comes from an earlier step and gets the "earlier step" answer, never a wrong transition.

Why this module is longer than the tree's ~500-line guide: it is the one state machine of a
turn — dispatch, entering steps, buttons, media, text, the built-in commands — and every case
of a transition reads the others' (a typed label is a press, a press can leave an offer, a
text can answer a card or a step). Kept together, one turn reads top to bottom in one file.
What has no part in the transitions lives beside it: what typed text means (``typed``),
values (``values``), actions (``actions``), the redaction gate (``redact``), answer cards
(``answers``).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field, replace

from .actions import ACTIONS, ActionContext, ActionFn
from .answers import AnswerHit, Card
from .content import Content
from .flows import MENU, FlowSet, Step
from .messages import Button, EventKind, Hint, Inbound, MatchResult, Reply
from .ports import ConversationStore, Direction, Entry, State, TurnScope
from .redact import screen, strip_secrets
from .typed import Typed, is_number
from .values import MAX_TEXT, clean_text

RETURN_TO = "return_to"  # a value: the step a flow that ends returns to (instead of the menu)
log = logging.getLogger(__name__)

MAX_PHOTO_BYTES = 20 * 1024 * 1024  # what a bot may download from Telegram
MAX_HOPS = 40  # a flow that goes on without input this many times is a content bug
SECRET_WARNED = "keep_secret_warned"  # the user was told their secret was removed (once)

#: The replies of the turn being saved, readable inside ``store.save_turn``: a door that keeps
#: its outgoing messages in the same database writes them in the turn's own transaction.
SAVING_REPLIES: contextvars.ContextVar[tuple[Reply, ...]] = contextvars.ContextVar("saving_replies", default=())


class MatcherPort:
    """What the engine needs from the matcher (bot.core.matcher.Matcher fits)."""

    def match(self, text: str) -> MatchResult: ...  # pragma: no cover

    def smalltalk(self, text: str) -> str | None: ...  # pragma: no cover

    def answer(self, text: str, accepted: str | None = None) -> AnswerHit | None: ...  # pragma: no cover

    def answer_card(self, card_id: str) -> Card | None: ...  # pragma: no cover


@dataclass(frozen=True)
class TurnRecord:
    """What happened in one turn, for listeners (agents' mirror, metrics)."""

    conversation_id: str
    inbound: Inbound
    entries: tuple[Entry, ...]
    replies: tuple[Reply, ...]
    state: State
    events: tuple[str, ...] = ()  # escalation events: human_requested, quote_sent, stuck...


CommandFn = Callable[["Turn", str], Awaitable[None]]
Listener = Callable[[TurnRecord], Awaitable[None]]


@dataclass
class Turn:
    """The mutable scratchpad of one turn; only ``Engine`` and command plug-ins use it."""

    engine: Engine
    state: State
    inbound: Inbound
    replies: list[Reply] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    secret: bool = False  # the redaction gate removed a secret from this turn's inbound

    # -- saying things -------------------------------------------------------------
    def say(self, key: str, values: Mapping[str, str] | None = None, notice: str = "") -> None:
        env = dict(self.state.values)
        if values:
            env.update(values)
        text = self.engine.content.text(key, env)
        self.replies.append(Reply(text=text, key=key, notice=notice))

    def say_text(self, text: str, key: str = "") -> None:
        self.replies.append(Reply(text=text, key=key))

    def attach(self, buttons: Iterable[tuple[str, str]]) -> None:
        """Attach (local id, label) buttons to the last reply, bumping seq."""
        seq = self.state.seq + 1
        self.state = replace(self.state, seq=seq)
        rendered = tuple(Button(f"{seq}:{bid}", label) for bid, label in buttons)
        if not self.replies:
            raise RuntimeError("buttons need a message to attach to")
        self.replies[-1] = replace(self.replies[-1], buttons=rendered, hint=Hint.REPLACE_KEYBOARD)

    def set_values(self, pairs: Iterable[tuple[str, str]]) -> None:
        values = dict(self.state.values)
        values.update(pairs)
        self.state = replace(self.state, values=values)

    def event(self, name: str) -> None:
        self.events.append(name)


# Commands a user may run while a person has taken over: erasing can't wait for the agent.
# With an argument ("/forget me?") it is a line for the agent like any other.
THROUGH_PAUSE = frozenset({"forget"})


def _through_pause(inbound: Inbound) -> bool:
    name = inbound.text.lower().lstrip("/").split("@")[0]
    return inbound.kind is EventKind.COMMAND and name in THROUGH_PAUSE and not inbound.arg.strip()


class Engine:
    """Runs conversations. One lock per conversation: its turns are strictly ordered."""

    def __init__(
        self,
        content: Content,
        flows: FlowSet,
        matcher: MatcherPort,
        store: ConversationStore,
        *,
        extra_actions: Mapping[str, tuple[ActionFn, tuple[str, ...]]] | None = None,
        commands: Mapping[str, CommandFn] | None = None,
    ) -> None:
        self.content = content
        self.flows = flows
        self.matcher = matcher
        self.store = store
        self.actions: dict[str, tuple[ActionFn, tuple[str, ...]]] = dict(ACTIONS)
        self.actions.update(extra_actions or {})
        self.commands: dict[str, CommandFn] = {
            "start": self._cmd_start,
            "menu": self._cmd_restart,
            "restart": self._cmd_restart,
            "help": self._cmd_help,
            "back": self._cmd_back,
            "cancel": self._cmd_cancel,
        }
        self.commands.update(commands or {})
        self.listeners: list[Listener] = []
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        # a store shared by several processes holds the conversation across them for a turn
        self._scope: Callable[[str], AbstractAsyncContextManager[object]] | None = (
            store.turn if isinstance(store, TurnScope) else None
        )
        self.typed = Typed(content, flows, matcher)  # what typed text means at a step

    # -- the seam ------------------------------------------------------------------
    def lock_for(self, conversation_id: str) -> asyncio.Lock:
        """The lock that orders this conversation's turns (others may hold it to pause one)."""
        lock = self._locks.get(conversation_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[conversation_id] = lock
        return lock

    async def handle(self, inbound: Inbound) -> tuple[Reply, ...]:
        # The one redaction gate: nothing below (state, transcript, unmatched, listeners that
        # mirror or mail, logs) ever sees a secret the user typed.
        inbound, secret = screen(inbound)
        lock = self.lock_for(inbound.conversation_id)
        scope = self._scope(inbound.conversation_id) if self._scope is not None else nullcontext()
        async with lock, scope:
            state = await self.store.load_state(inbound.conversation_id)
            if state is None:
                state = State(inbound.conversation_id, user_name=inbound.user_name)
            turn = Turn(self, state, inbound, secret=secret)
            await self._dispatch(turn)
            self._risk_event(state, turn)
            replies = tuple(turn.replies)
            for r in replies:
                turn.entries.append(Entry(Direction.OUT, r.text, kind="reply",
                                          flow=turn.state.flow, step=turn.state.step))
            saving = SAVING_REPLIES.set(replies)
            try:
                await self.store.save_turn(turn.state, turn.entries, tuple(turn.events))
            finally:
                SAVING_REPLIES.reset(saving)
            record = TurnRecord(inbound.conversation_id, inbound, tuple(turn.entries), replies,
                                turn.state, tuple(turn.events))
        for listener in self.listeners:
            try:
                await listener(record)
            except Exception:  # a listener must never break the conversation
                log.exception("turn listener failed for %s", inbound.conversation_id)
        return replies

    def _risk_event(self, before: State, turn: Turn) -> None:
        """``data_at_risk`` as the conversation reaches data at risk: a flow marked
        ``data_at_risk: true`` entered, or an answer set the ``data_at_risk`` value."""
        after = turn.state
        if before.paused or "data_at_risk" in turn.events:
            return
        flow = self.flows.flows.get(after.flow)
        entered = after.flow != before.flow and flow is not None and flow.data_at_risk
        if entered or (after.values.get("data_at_risk") and not before.values.get("data_at_risk")):
            turn.event("data_at_risk")

    async def state_of(self, conversation_id: str) -> State | None:
        return await self.store.load_state(conversation_id)

    # -- dispatch ------------------------------------------------------------------
    async def _dispatch(self, turn: Turn) -> None:
        inbound = turn.inbound
        if inbound.user_name and inbound.user_name != turn.state.user_name:
            turn.state = replace(turn.state, user_name=inbound.user_name)
        if not turn.state.active:
            turn.state = replace(turn.state, active=True)
        if turn.state.paused and not _through_pause(inbound):
            # a person has taken over: record what the user said, let the agent answer
            text = clean_text(inbound.text or inbound.payload or "")
            kind = inbound.kind.value
            if inbound.kind is EventKind.COMMAND:
                text = f"/{inbound.text} {inbound.arg}".strip()
            elif inbound.kind is EventKind.BUTTON:
                text = self._label_for(turn.state, inbound.payload.partition(":")[2]) or text
            elif inbound.kind is EventKind.MEDIA:
                text = f"[{','.join(a.kind for a in inbound.attachments) or 'media'}] {text}".strip()
            turn.entries.append(Entry(Direction.IN, text, kind=kind, flow=turn.state.flow, step=turn.state.step))
            turn.event("paused_message")
            return
        if turn.secret and not turn.state.values.get(SECRET_WARNED):  # told once, kept over /restart
            turn.say("engine.password_warning")
            turn.set_values([(SECRET_WARNED, "1")])
        if inbound.kind is EventKind.COMMAND:
            name = inbound.text.lower().lstrip("/").split("@")[0]
            turn.entries.append(Entry(Direction.IN, f"/{name} {inbound.arg}".strip(), kind="command"))
            handler = self.commands.get(name)
            if handler is None:
                turn.say("engine.unknown_command")
                await self._reprompt(turn)
            else:
                await handler(turn, inbound.arg)
            return
        if inbound.kind is EventKind.BUTTON:
            await self._on_button(turn, inbound.payload)
            return
        if inbound.kind is EventKind.MEDIA:
            await self._on_media(turn)
            return
        await self._on_text(turn, inbound.text)

    # -- entering steps ------------------------------------------------------------
    async def goto(self, turn: Turn, target: str, *, remember: bool = True) -> None:
        """Enter ``target`` and run until a step waits for input or the flow ends."""
        if remember and turn.state.ref and self.flows.has(turn.state.ref):
            hist = (turn.state.history + (turn.state.ref,))[-20:]
            turn.state = replace(turn.state, history=hist)
        for _ in range(MAX_HOPS):
            step = self.flows.step(target)
            turn.state = replace(turn.state, flow=step.flow, step=step.name, offer=())
            if step.event:
                turn.event(step.event)
            for key in step.say:
                turn.say(key)
            if step.do:
                fn, _ = self.actions[step.do]
                result = await fn(ActionContext(turn.state.conversation_id, turn.state.values, self.content))
                turn.set_values(result.set)
                for name in result.events:
                    turn.event(name)
                target = dict(step.branches)[result.branch]
                continue
            if step.next:
                target = step.next
                continue
            if step.end:
                if target == MENU:  # the menu itself ended: nothing more to show
                    return
                back = turn.state.values.get(RETURN_TO, "")
                if back:  # a detour (the feedback question after a hand-back) goes back where it was
                    turn.set_values([(RETURN_TO, "")])
                    if self.flows.has(back):
                        target = back
                        continue
                target = MENU
                continue
            self._show_buttons(turn, step)
            return
        raise RuntimeError(f"flow loops without waiting for input at {target}")

    def _show_buttons(self, turn: Turn, step: Step) -> None:
        buttons = self.typed.step_buttons(step, turn.state.values)
        if not buttons:
            return
        if not turn.replies:
            key = step.say[-1] if step.say else "engine.not_understood_step"
            turn.say(key)
        turn.attach(buttons)

    async def reprompt(self, turn: Turn) -> None:
        """Show the current step again (its last text and its buttons), or the menu.

        For command plug-ins (e.g. /status) that answer and then return to where the user was.
        """
        await self._reprompt(turn)

    async def _reprompt(self, turn: Turn) -> None:
        """Show the current step again (its last text and its buttons), or the menu."""
        ref = turn.state.ref
        if not ref or not self.flows.has(ref):
            await self.goto(turn, MENU, remember=False)
            return
        step = self.flows.step(ref)
        if step.say:
            turn.say(step.say[-1])
        turn.state = replace(turn.state, offer=())
        self._show_buttons(turn, step)

    async def start_flow(self, turn: Turn, flow_id: str, trigger: str = "") -> None:
        turn.state = replace(turn.state, misses=0)
        # the message that opened the flow, for direct answers (plan_answer, cost_answer);
        # a flow opened by a button or a deep link has none
        turn.set_values([("trigger_text", trigger[:300])])
        await self.goto(turn, f"{flow_id}.start")

    # -- buttons -------------------------------------------------------------------
    async def _on_button(self, turn: Turn, payload: str) -> None:
        seq_s, _, bid = payload.partition(":")
        turn.entries.append(Entry(Direction.IN, self._label_for(turn.state, bid) or bid, kind="button",
                                  flow=turn.state.flow, step=turn.state.step))
        if not is_number(seq_s) or int(seq_s) != turn.state.seq:
            turn.say("engine.stale_button", notice=self.content.raw("engine.stale_button"))
            await self._reprompt(turn)
            return
        await self._press(turn, bid)

    def _label_for(self, state: State, bid: str) -> str:
        """The label the user saw on the button (for the transcript), "" if unknown."""
        if bid in state.offer:
            return self.typed.offer_label(bid)
        if state.ref and self.flows.has(state.ref):
            step = self.flows.step(state.ref)
            if step.multi and bid == "m__done":
                return self.content.raw(step.multi.done_label)
            for b in step.buttons + (step.multi.options if step.multi else ()):
                if b.id == bid or f"m_{b.id}" == bid:
                    return self.content.raw(b.label)
        return ""

    async def _press(self, turn: Turn, bid: str) -> None:
        state = turn.state
        if bid in state.offer:
            await self._press_offer(turn, bid)
            return
        step = self.flows.step(state.ref) if state.ref and self.flows.has(state.ref) else None
        if step and step.multi and bid.startswith("m_"):
            await self._press_multi(turn, step, bid[2:])
            return
        for b in step.buttons if step else ():
            if b.id == bid:
                turn.set_values(b.set)
                await self.goto(turn, b.goto)
                return
        turn.say("engine.stale_button")
        await self._reprompt(turn)

    async def _press_multi(self, turn: Turn, step: Step, oid: str) -> None:
        assert step.multi
        var = step.multi.var
        chosen = [v for v in turn.state.values.get(var, "").split(",") if v]
        if oid == "_done":
            if not chosen:
                turn.say(step.multi.invalid)
                self._show_buttons(turn, step)
                return
            await self.goto(turn, step.multi.next)
            return
        if oid in chosen:
            chosen.remove(oid)
        elif any(o.id == oid for o in step.multi.options):
            chosen.append(oid)
        turn.set_values([(var, ",".join(chosen))])
        if step.say:
            turn.say(step.say[-1])
        self._show_buttons(turn, step)

    async def _press_offer(self, turn: Turn, bid: str) -> None:
        kind, _, arg = bid.partition(":")
        trigger = turn.state.values.get("pending_text", "")
        turn.state = replace(turn.state, offer=())
        if kind in ("intent", "switch"):
            flow = self.flows.flow_for_intent(arg)
            if flow:
                turn.state = replace(turn.state, history=())
                await self.start_flow(turn, flow.id, trigger)
                return
        if kind == "other":
            await self.goto(turn, MENU)
            return
        if kind == "card":
            card = self.matcher.answer_card(arg)
            if card is not None:
                turn.replies.append(Reply(text=card.answer, key=f"answers.{card.id}"))
                buttons = self._card_buttons(card)
                turn.attach(buttons)
                turn.state = replace(turn.state, offer=tuple(b for b, _ in buttons))
                return
        await self._reprompt(turn)  # "stay"

    def _offer(self, turn: Turn, key: str, buttons: list[tuple[str, str]],
               values: Mapping[str, str] | None = None) -> None:
        turn.say(key, values)
        turn.attach(buttons)
        turn.state = replace(turn.state, offer=tuple(b for b, _ in buttons))

    # -- media ---------------------------------------------------------------------
    async def _on_media(self, turn: Turn) -> None:
        step = self.flows.step(turn.state.ref) if turn.state.ref and self.flows.has(turn.state.ref) else None
        takes_photos = bool(step and step.ask and step.ask.type == "photos")
        kinds = ",".join(a.kind for a in turn.inbound.attachments) or "media"
        if turn.inbound.text.strip() and not takes_photos:
            # a screenshot captioned "icloud storage full" says what the same text says; the
            # transcript keeps that it was a screenshot ("[photo] icloud storage full")
            first = len(turn.entries)
            await self._on_text(turn, turn.inbound.text)
            for i in range(first, len(turn.entries)):
                if turn.entries[i].direction is Direction.IN:
                    e = turn.entries[i]
                    turn.entries[i] = replace(e, text=f"[{kinds}] {e.text}".strip(), kind="media")
                    break
            return
        turn.entries.append(Entry(Direction.IN, f"[{kinds}] {turn.inbound.text}".strip(), kind="media",
                                  flow=turn.state.flow, step=turn.state.step))
        step = self.flows.step(turn.state.ref) if turn.state.ref and self.flows.has(turn.state.ref) else None
        if step and step.ask and step.ask.type == "photos":
            photos = [a for a in turn.inbound.attachments if a.kind == "photo"]
            too_big = [p for p in photos if p.size > MAX_PHOTO_BYTES]
            photos = [p for p in photos if p.size <= MAX_PHOTO_BYTES]
            if too_big:
                turn.say("engine.photo_too_big")
            if photos:
                ids = [v for v in turn.state.values.get(step.ask.var, "").split(",") if v]
                ids += [p.file_id for p in photos]
                turn.set_values([(step.ask.var, ",".join(ids))])
                if step.ask.invalid:
                    turn.say(step.ask.invalid, {"count": str(len(ids))})
                self._show_buttons(turn, step)
                return
            if too_big:
                self._show_buttons(turn, step)
                return
        turn.say("engine.media_only_text")
        await self._reprompt(turn)

    # -- text ----------------------------------------------------------------------
    async def _on_text(self, turn: Turn, raw: str) -> None:
        text = clean_text(raw)
        if len(text) > MAX_TEXT * 10:
            text = text[: MAX_TEXT * 10]
        safe, had_secret = text, turn.secret  # already through the gate (handle)
        state = turn.state
        step = self.flows.step(state.ref) if state.ref and self.flows.has(state.ref) else None
        if not text or not any(ch.isalnum() for ch in text):
            turn.entries.append(Entry(Direction.IN, safe, flow=state.flow, step=state.step))
            if step and step.ask and step.ask.type == "text" and text:
                pass  # emoji-only names are still names: validated below
            else:
                turn.say("engine.empty_message")
                await self._reprompt(turn)
                return
        # 1. a button label typed out (not a number on an ask step: "-5 GB" is a value to
        # check, not the "5 GB" button)
        numeric_answer = bool(step and step.ask and not state.offer and any(ch.isdigit() for ch in text))
        bid = None if numeric_answer else self.typed.button(turn.state, step, text)
        if bid is not None:
            turn.entries.append(Entry(Direction.IN, safe, kind="text", flow=state.flow, step=state.step))
            await self._press(turn, bid)
            return
        # 1b. a topic's label typed out ("check my last backup"), from any step
        flow_id = None if bid is not None else self.typed.title(text)
        if flow_id is not None and not (step and step.flow == flow_id):
            turn.entries.append(Entry(Direction.IN, safe, kind="text", flow=state.flow, step=state.step))
            in_flow = step is not None and step.flow != "main_menu" and step.waits
            intent = self.flows.flows[flow_id].intents[0]
            await self._accepted(turn, intent, safe, step, in_flow)
            return
        # 2. a value for an ask step; free text that asks one of the cards' questions is no value
        card_first = bool(step and step.ask and step.ask.type == "text" and self.matcher.answer(safe[:MAX_TEXT]))
        if step and step.ask and not card_first:  # an answer to the question wins over a pending offer
            value, note = self.typed.parse_value(step.ask.type, text)
            if value is not None and had_secret and step.ask.type == "text":
                value = strip_secrets(value) or None  # "iPhone 13, code 5566" -> "iPhone 13"
            if value is not None:
                turn.entries.append(Entry(Direction.IN, safe, flow=state.flow, step=state.step))
                if note:
                    turn.say("engine.truncated")
                turn.set_values([(step.ask.var, value)])
                await self.goto(turn, step.ask.next)
                return
        # 3. what does it mean?
        if len(text) > MAX_TEXT:
            turn.say("engine.truncated")
        result = self.matcher.match(safe[:MAX_TEXT])
        hit = self.matcher.answer(safe[:MAX_TEXT], None if card_first or result.decision != "accept"
                                  else result.intent)
        waiting = step is not None and step.flow != "main_menu" and step.waits
        if hit is not None and not card_first and not waiting and await self._flow_answers(turn, result, hit, safe):
            hit = None  # the topic's own flow answers this very message (its row, or one question)
        small = self.matcher.smalltalk(safe[:MAX_TEXT]) if result.decision != "accept" and not hit else None
        turn.entries.append(Entry(
            Direction.IN, safe, intent=hit.card.intent if hit else result.intent,
            score=hit.score if hit else result.score, decision="accept" if hit else result.decision,
            candidates=tuple((c.intent, c.score) for c in result.candidates),
            flow=state.flow, step=state.step,
        ))
        in_flow = step is not None and step.flow != "main_menu" and step.waits
        if small:
            await self._smalltalk(turn, small, in_flow)
            return
        if hit is not None:
            turn.state = replace(turn.state, misses=0)
            await self._answer(turn, hit, result, in_flow)
            return
        if result.decision == "accept" and result.intent:
            await self._accepted(turn, result.intent, safe, step, in_flow)
            return
        if step and step.ask:
            self._say_invalid(turn, step)
            await self._reprompt_buttons_only(turn)
            return
        if result.decision == "suggest":
            turn.state = replace(turn.state, misses=0)
            self._suggest(turn, result, safe, in_flow)
            return
        misses = turn.state.misses + 1
        turn.state = replace(turn.state, misses=misses)
        if misses >= 2:
            turn.event("not_understood_twice")
        if in_flow:
            turn.say("engine.not_understood_step")
            await self._reprompt_buttons_only(turn)
        else:
            turn.say("engine.not_understood")
            await self.goto(turn, MENU, remember=False)

    async def _flow_answers(self, turn: Turn, result: MatchResult, hit: AnswerHit, text: str) -> bool:
        """Whether the accepted intent is the card's and its flow starts by answering this very
        message: its ``do:`` action finds something in the words (a plan's or a damage's row, or
        a question when they fit several rows) rather than its "none" branch."""
        if result.decision != "accept" or result.intent != hit.card.intent:
            return False
        flow = self.flows.flow_for_intent(hit.card.intent)
        start = self.flows.step(f"{flow.id}.start") if flow is not None else None
        if start is None or not start.do:
            return False
        fn, _ = self.actions[start.do]
        values = {**turn.state.values, "trigger_text": text[:300]}
        found = await fn(ActionContext(turn.state.conversation_id, values, self.content))
        return found.branch != "none"

    async def _answer(self, turn: Turn, hit: AnswerHit, result: MatchResult, in_flow: bool) -> None:
        """Say the card's answer; in a flow show the current step again, else offer what's next."""
        card = hit.card
        turn.replies.append(Reply(text=card.answer, key=f"answers.{card.id}"))
        if in_flow:
            await self._reprompt(turn)
            return
        buttons = self._card_buttons(card, result)
        turn.attach(buttons)
        turn.state = replace(turn.state, offer=tuple(b for b, _ in buttons))
        turn.set_values([("pending_text", turn.inbound.text[:300])])

    def _card_buttons(self, card: Card, result: MatchResult | None = None) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        follow = list(card.then)
        # a complaint with a question: the answer, and the offer of the complaint's fix flow
        if (result is not None and result.decision == "accept" and result.intent
                and result.intent != card.intent and result.intent not in follow):
            follow.insert(0, result.intent)
        for t in follow:
            if t.startswith("card:"):
                out.append((t, self.typed.offer_label(t)))
            elif self.flows.flow_for_intent(t):
                out.append((f"intent:{t}", self.typed.offer_label(f"intent:{t}")))
        out.append(("other", self.content.raw("engine.something_else")))
        return out[:4]

    def _say_invalid(self, turn: Turn, step: Step) -> None:
        """The ask step's "that's not an answer" line (with how many items are picked so far)."""
        assert step.ask is not None
        count = len([v for v in turn.state.values.get(step.ask.var, "").split(",") if v])
        turn.say(step.ask.invalid or "engine.not_understood_step", {"count": str(count)})

    async def _reprompt_buttons_only(self, turn: Turn) -> None:
        step = self.flows.step(turn.state.ref)
        turn.state = replace(turn.state, offer=())
        self._show_buttons(turn, step)

    async def _smalltalk(self, turn: Turn, kind: str, in_flow: bool) -> None:
        if kind == "help":
            turn.say("engine.help")
        else:
            turn.say(f"engine.smalltalk.{kind}")
        if in_flow:
            await self._reprompt_buttons_only(turn)
        elif kind == "greeting" or kind == "help":
            await self.goto(turn, MENU, remember=False)

    async def _accepted(self, turn: Turn, intent: str, text: str, step: Step | None, in_flow: bool) -> None:
        flow = self.flows.flow_for_intent(intent)
        if flow is None:  # pragma: no cover - check guarantees a flow per intent
            turn.say("engine.not_understood")
            return
        turn.state = replace(turn.state, misses=0)
        if in_flow and step is not None:
            if flow.id == step.flow:
                if step.ask:  # about this very step but not a usable answer ("-5 GB"): say why
                    self._say_invalid(turn, step)
                    await self._reprompt_buttons_only(turn)
                    return
                await self._reprompt(turn)
                return
            if not _in_progress(step):  # a knowledge answer: nothing to lose, just switch
                turn.state = replace(turn.state, history=())
                await self.start_flow(turn, flow.id, text)
                return
            turn.set_values([("pending_text", text[:300])])
            self._offer(turn, "engine.switch_offer",
                        [(f"switch:{intent}", self.content.raw("engine.switch_yes")),
                         ("stay", self.content.raw("engine.switch_no"))],
                        {"title": self.content.raw(flow.title)})
            return
        turn.state = replace(turn.state, history=())
        await self.start_flow(turn, flow.id, text)

    def _suggest(self, turn: Turn, result: MatchResult, text: str, in_flow: bool) -> None:
        buttons: list[tuple[str, str]] = []
        for c in result.candidates[:3]:
            flow = self.flows.flow_for_intent(c.intent)
            if flow and not any(b == f"intent:{c.intent}" for b, _ in buttons):
                buttons.append((f"intent:{c.intent}", self.content.raw(flow.title)))
        buttons.append(("other", self.content.raw("engine.something_else")))
        if in_flow:
            buttons.append(("stay", self.content.raw("engine.switch_no")))
        turn.set_values([("pending_text", text[:300])])
        self._offer(turn, "engine.suggest", buttons)

    # -- commands ------------------------------------------------------------------
    async def _cmd_start(self, turn: Turn, arg: str) -> None:
        payload = re.sub(r"[^A-Za-z0-9_-]", "", arg or "")[:64]
        turn.state = replace(turn.state, history=(), offer=(), misses=0)
        turn.say("engine.greeting")
        flow_id = None
        if payload in self.flows.flows and payload not in ("main_menu", "common"):
            flow_id = payload
        elif payload:
            flow = self.flows.flow_for_intent(payload)
            flow_id = flow.id if flow else None
        if flow_id:
            turn.state = replace(turn.state, flow="", step="")
            await self.start_flow(turn, flow_id)
        else:
            await self.goto(turn, MENU, remember=False)

    async def _cmd_restart(self, turn: Turn, _arg: str) -> None:
        values = {k: v for k, v in turn.state.values.items() if k.startswith("keep_")}
        turn.state = replace(turn.state, flow="", step="", history=(), offer=(), misses=0, values=values)
        turn.say("engine.restarted")
        await self.goto(turn, MENU, remember=False)

    async def _cmd_help(self, turn: Turn, _arg: str) -> None:
        turn.say("engine.help")
        await self._reprompt(turn)

    async def _cmd_back(self, turn: Turn, _arg: str) -> None:
        history = list(turn.state.history)
        while history and not self.flows.has(history[-1]):
            history.pop()
        if not history:
            turn.say("engine.back_none")
            await self._reprompt(turn)
            return
        target = history.pop()
        turn.state = replace(turn.state, history=tuple(history), offer=())
        step = self.flows.step(target)
        turn.state = replace(turn.state, flow=step.flow, step=step.name)
        await self._reprompt(turn)

    async def _cmd_cancel(self, turn: Turn, _arg: str) -> None:
        values = {k: v for k, v in turn.state.values.items() if k not in ("trigger_text", "pending_text")}
        turn.state = replace(turn.state, flow="", step="", history=(), offer=(), values=values)
        turn.say("engine.cancelled")
        await self.goto(turn, MENU, remember=False)


def _in_progress(step: Step) -> bool:
    """A step whose answer the user would lose by switching topic without being asked."""
    return bool(step.ask or step.multi or any(b.id in ("yes", "no") for b in step.buttons))




