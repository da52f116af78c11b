"""The pinned case card of each topic: rendered from the conversation's state and transcript
(and the quote feature's status, through its port), edited when it changes, pinned, and the
topic renamed when the problem is known.
"""


from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from bot.store.conversations import MessageRow

from ..ports import (
    MessageGone,
    NotModified,
    ThreadNotFound,
)
from ..render import (
    CardData,
    clip,
    one_line,
    render_card,
)
from ..rows import Topic
from .records import CALLBACK_PREFIX, NOTE_KIND
from .state import DeskState
from .topics import Topics
from .wiring import DeskPorts, Part, Signals

log = logging.getLogger(__name__)


class Cards(Part):
    """Each topic's card: rendered, posted (through the writer's ``serve_topic``), edited,
    pinned, the topic renamed (the state's ``card_work``)."""

    def __init__(self, ports: DeskPorts, st: DeskState, signals: Signals, topics: Topics) -> None:
        super().__init__(ports, st, signals)
        self.topics = topics

    # -- case cards -------------------------------------------------------------------------------
    async def step(self, serve_topic: Callable[[Topic], Awaitable[bool]]) -> bool:
        """One call for the first card that needs one (a topic without a card: its first post)."""
        assert self.gateway is not None
        gw = self.gateway
        for cid in list(self.st.card_work):
            t = self.st.topics.get(cid)
            if t is None or t.thread_id is None:
                self.st.card_work.discard(cid)
                continue
            thread = t.thread_id
            if t.card_message_id is None:
                return await serve_topic(t)
            message_id = t.card_message_id
            if t.card_dirty:
                html = await self.html(t)
                t.card_dirty = False
                if html != t.card_html:
                    try:
                        buttons = self.buttons(t)
                        await self.ports.call(False, lambda m=message_id, h=html, b=buttons: gw.edit(m, h, b))
                        t.card_html = html
                    except NotModified:
                        t.card_html = html
                    except MessageGone:
                        t.card_message_id = None
                        t.card_pinned = False
                    except ThreadNotFound:
                        self.topics.lost(t)
                    await self.ports.reg.save(t)
                    return True
            if not t.card_pinned:
                try:
                    await self.ports.call(False, lambda m=message_id: gw.pin(m))
                    t.card_pinned = True
                except MessageGone:
                    t.card_message_id = None
                except ThreadNotFound:
                    self.topics.lost(t)
                await self.ports.reg.save(t)
                return True
            if t.name_dirty:
                name = self.topics.name_for(t)
                t.name_dirty = False
                if name != t.topic_name:
                    try:
                        await self.ports.call(False, lambda th=thread, n=name: gw.rename_topic(th, n))
                        t.topic_name = name
                    except NotModified:
                        t.topic_name = name
                    except ThreadNotFound:
                        self.topics.lost(t)
                    await self.ports.reg.save(t)
                    return True
            if not (t.card_dirty or t.name_dirty or not t.card_pinned or t.card_message_id is None):
                self.st.card_work.discard(cid)
        return False

    async def html(self, t: Topic) -> str:
        state = await self.ports.rstore.load_state(t.conversation_id)
        rows = await self.ports.reg.conversation_rows(t.conversation_id, 0, None, 5000)
        values = dict(state.values) if state else {}
        # the conversation's first words (not the text that started the current flow)
        said = next((r.text for r in rows if r.direction == "in" and r.kind == "text"), "")
        said = said or values.get("trigger_text", "")
        quote = await self.quote_state(t.conversation_id) or t.quote_state
        quote_case = None
        if quote and self.ports.quotes is not None:  # a request exists: its reference, device, contact, price
            quote_case = await self.ports.quotes.quote_case(t.conversation_id)
        card = CardData(
            ref=t.ref,
            conversation_id=t.conversation_id,
            user_name=(state.user_name if state and state.user_name else t.user_name),
            symptom_title=self.topics.symptom_title(t.symptom),
            said=said,
            step_ref=state.ref if state else "",
            paused_by=t.paused_by,
            paused_until=t.paused_until,
            blocked=bool(state is not None and not state.active),
            flags=tuple(t.flag_list),
            steps=tuple(self.steps_tried(rows, values)),
            values=values,
            quote_state=quote,
            messages=len(rows),
            since=rows[0].ts if rows else None,
            owner=t.owner_name,
            notes=tuple(r.text for r in rows if r.direction == "note" and r.kind == NOTE_KIND),
            quote_case=quote_case,
        )
        html = render_card(card, self.texts).html
        rating = values.get("csat", "")
        if rating.isdigit():  # the satisfaction answer (flows/feedback.yaml)
            comment = values.get("csat_comment", "")
            line = self.texts(
                "agents.desk.card_rating",
                stars="★" * int(rating) + "☆" * (5 - int(rating)),
                rating=rating,
                comment=f" — “{clip(one_line(comment), 200)}”" if comment else "",
            )
            html += "\n" + line.html
        return html

    def steps_tried(self, rows: list[MessageRow], values: dict[str, str]) -> list[tuple[str, bool]]:
        flows, content = self.engine.flows, self.engine.content
        yes_words, no_words = (
            set(content.words("engine.yes_words")),
            set(content.words("engine.no_words")),
        )
        out: list[tuple[str, bool]] = []
        for r in rows:
            if r.direction != "in" or r.kind not in ("button", "text") or not self.topics.symptom_of(r.flow):
                continue  # only fix steps: the quote form's yes/no answers are not "steps tried"
            ref = f"{r.flow}.{r.step}"
            if not flows.has(ref):
                continue
            step = flows.step(ref)
            labels = {b.id: content.raw(b.label) for b in step.buttons if b.id in ("yes", "no")}
            if len(labels) != 2:
                continue
            typed = " ".join(r.text.lower().replace("'", "").replace("’", "").split())
            if r.text == labels["yes"] or typed in yes_words:
                fixed = True
            elif r.text == labels["no"] or typed in no_words:
                fixed = False
            else:
                continue
            what = ""
            if step.say:
                try:
                    what = one_line(content.text(step.say[-1], values))
                except (KeyError, ValueError, IndexError):
                    what = step.say[-1]
            out.append((clip(what or ref, 70), fixed))
        return out

    def buttons(self, t: Topic) -> list[tuple[str, str]]:
        """🙋 Claim while nobody owns the case (the owner shows on the card)."""
        if t.owner_id:
            return []
        return [(self.texts.plain("agents.desk.btn_claim_case"), f"{CALLBACK_PREFIX}c:{t.ref}")]

    async def quote_state(self, cid: str) -> str:
        return await self.ports.quotes.quote_state(cid) if self.ports.quotes is not None else ""
