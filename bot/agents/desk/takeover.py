"""Takeover and hand-back: agents' messages relayed to the user (pausing the bot), internal
notes (``//``, ``/note``: never sent), held replies (the bot is still talking: "send and pause
the bot?"; another agent owns the case: "reply anyway / take over"), ownership, edits, the
hand-back through the engine, pauses restored after a restart.
"""


from __future__ import annotations

import contextlib
import logging

from bot.core.messages import EventKind, Inbound
from bot.core.ports import Direction, Entry

from .. import privacy
from ..ports import (
    GatewayError,
    MessageGone,
    NotModified,
    UserBlocked,
)
from ..render import (
    MAX_CAPTION,
    MAX_VISIBLE,
    NL,
    Html,
    clip,
    display_name,
    tg_len,
)
from ..rows import Topic
from .posts import Posts
from .queue import Queue
from .recorder import Recorder
from .records import (
    CALLBACK_PREFIX,
    NO_CAPTION,
    NOTE_KIND,
    NOTE_PREFIX,
    RESUME_COMMAND,
    AgentCallback,
    AgentMessage,
    conversation_lock,
)
from .state import DeskState
from .topics import Topics
from .wiring import DeskPorts, Part, Signals

log = logging.getLogger(__name__)


class Takeover(Part):
    """Agents' messages and edits in a user's topic, held replies, owners, pauses and the
    hand-back (the state's ``held``, ``agents_seen``)."""

    def __init__(
        self,
        ports: DeskPorts,
        st: DeskState,
        signals: Signals,
        *,
        topics: Topics,
        posts: Posts,
        queue: Queue,
        recorder: Recorder,
    ) -> None:
        super().__init__(ports, st, signals)
        self.topics = topics
        self.posts = posts
        self.queue = queue
        self.recorder = recorder

    # -- agents' input ----------------------------------------------------------------------------
    def head(self, agent: str) -> Html:
        return Html("<b>", 0) + self.texts("agents.from_person", name=agent or "?") + Html("</b>", 0)

    def relay_html(self, m: AgentMessage, limit: int) -> str:
        head = self.head(m.user_name)
        if not m.text:
            return head.html
        if head.visible + 1 + tg_len(m.text) <= limit:
            return head.html + "\n" + m.html
        return (head + NL + Html.text(clip(m.text, max(10, limit - head.visible - 2)))).html

    async def on_message(self, m: AgentMessage) -> None:
        """An agent wrote in a user's topic: a note (``//``), a reply held for a tap (the bot
        is still talking, or another agent owns the case), or a reply relayed to the user."""
        if m.chat_id != self.chat_id:
            return
        self.seen_agent(m.user_id, m.user_name, m.username)
        cid = self.st.by_thread.get(m.thread_id) if m.thread_id is not None else None
        if cid is None:
            return  # General, Escalations, Live feed: talk among agents
        t = self.st.topics[cid]
        if await self.ports.reg.relay(m.message_id) is not None:
            return  # the same update again
        if m.text.lstrip().startswith(NOTE_PREFIX):
            await self.add_note(t, m.user_name, m.text.lstrip()[len(NOTE_PREFIX) :].strip(), m.media)
            return
        if privacy.telegram_user_id(cid) is None:
            await self.recorder.note(cid, self.texts("agents.desk.note_not_telegram", conversation=cid))
            return
        held = self.st.held.get((cid, m.user_id))
        if held is not None:  # this agent's earlier message waits for a tap: this one waits with it
            held.append(m)
            return
        if t.owner_id and t.owner_id != m.user_id:
            self.hold(t, m, "owned")
        elif t.paused_until is None:
            self.hold(t, m, "confirm")
        else:
            await self.send_held(t, [m], claim=True)

    def seen_agent(self, user_id: int, name: str, username: str) -> None:
        if user_id:
            self.st.agents_seen[user_id] = (name, username)

    async def add_note(self, t: Topic, agent: str, text: str, media: str = "") -> None:
        """An internal note: in the transcript and on the card, never sent to the user."""
        body = f"[{media}] {text}".strip() if media else text
        line = self.texts.plain("agents.desk.note_line", agent=agent or "?", text=body)
        await self.store.add_entries(t.conversation_id, [Entry(Direction.NOTE, line, kind=NOTE_KIND)])
        self.signals.new_rows()
        self.topics.mark_card(t)

    def hold(self, t: Topic, m: AgentMessage, why: str) -> None:
        """Keep ``m`` in the group and ask its author: confirm (the bot is still talking) or
        owned (another agent owns the case)."""
        self.st.held[(t.conversation_id, m.user_id)] = [m]
        data = f"{t.ref}:{m.user_id}"
        if why == "owned":
            html = self.texts("agents.desk.owned_prompt", owner=t.owner_name or "?").html
            buttons = [
                (self.texts.plain("agents.desk.btn_reply_anyway"), f"{CALLBACK_PREFIX}a:{data}"),
                (self.texts.plain("agents.desk.btn_take_over"), f"{CALLBACK_PREFIX}t:{data}"),
            ]
        else:
            html = self.texts("agents.desk.confirm_prompt", name=display_name(t.user_name, self.texts)).html
            buttons = [
                (self.texts.plain("agents.desk.btn_send_pause"), f"{CALLBACK_PREFIX}s:{data}"),
                (self.texts.plain("agents.desk.btn_keep_note"), f"{CALLBACK_PREFIX}n:{data}"),
            ]
        thread, cid = m.thread_id, t.conversation_id
        # recorded like the desk's other posts about a user (erasure, retention: bot/agents/desk/posts.py)
        self.st.urgent.append(lambda: self.posts.post(thread, html, buttons, kind="held", about=[cid]))
        self.signals.wake.set()

    async def on_held(self, cb: AgentCallback, kind: str, t: Topic, author: int) -> None:
        """A tap on a held message's prompt: s = send (and claim), n = keep as notes,
        a = reply anyway (the owner stays), t = take over the case and send."""
        assert self.gateway is not None
        gw = self.gateway
        key = (t.conversation_id, author)
        msgs = self.st.held.get(key)
        if msgs is None:
            with contextlib.suppress(GatewayError):
                await gw.answer_callback(cb.callback_id, self.texts.plain("agents.desk.held_gone"))
            return
        if cb.user_id != author:
            name = msgs[0].user_name or "?"
            with contextlib.suppress(GatewayError):
                await gw.answer_callback(cb.callback_id, self.texts.plain("agents.desk.held_not_yours", agent=name))
            return
        with contextlib.suppress(GatewayError):
            await gw.answer_callback(cb.callback_id)
        del self.st.held[key]
        agent = msgs[0].user_name
        if kind == "n":
            for m in msgs:
                await self.add_note(t, m.user_name, m.text, m.media)
            choice = self.texts("agents.desk.held_noted", agent=agent or "?").html
        elif kind == "s" and t.owner_id and t.owner_id != author:
            # someone else claimed the case meanwhile: ask again, as "owned"
            self.hold(t, msgs[0], "owned")
            self.st.held[key].extend(msgs[1:])
            choice = self.texts("agents.desk.owned_prompt", owner=t.owner_name or "?").html
        else:
            if kind == "t":
                await self.set_owner(t, author, agent, "agents.desk.note_claimed", by=agent)
            await self.send_held(t, msgs, claim=kind != "a")
            choice = self.texts("agents.desk.held_sent", agent=agent or "?").html
        message_id = cb.message_id

        async def edit() -> None:
            with contextlib.suppress(NotModified, MessageGone):
                await gw.edit(message_id, choice)

        self.st.urgent.append(edit)
        self.signals.wake.set()

    async def set_owner(self, t: Topic, owner_id: int, owner_name: str, note_key: str, *, by: str) -> None:
        t.owner_id = owner_id
        t.owner_name = owner_name if owner_id else ""
        await self.ports.reg.save(t)
        # the note is stored before the card is marked: the writer reads new lines before it
        # redraws cards, so the topic never shows the new owner on the card without the note
        await self.recorder.note(t.conversation_id, self.texts(note_key, agent=by or "?", owner=owner_name or "?"))
        self.topics.mark_card(t)

    async def send_held(self, t: Topic, msgs: list[AgentMessage], *, claim: bool) -> None:
        if claim and not t.owner_id and msgs:  # the owner first: the card says who before the user reads it
            first = msgs[0]
            await self.set_owner(t, first.user_id, first.user_name, "agents.desk.note_claimed", by=first.user_name)
        for m in msgs:
            await self.relay(t, m)

    async def relay(self, t: Topic, m: AgentMessage) -> None:
        """Send one agent message to the user (pausing the bot; the first one says a person joined)."""
        assert self.gateway is not None
        gw = self.gateway
        cid = t.conversation_id
        uid = privacy.telegram_user_id(cid)
        if uid is None:
            return
        newly = await self.pause(t, m.user_name)
        what = f"[{m.media}] {m.text}".strip() if m.media else m.text
        try:
            if newly:
                await gw.send_to_user(uid, self.texts("agents.joined").html)
            if m.media in NO_CAPTION:  # stickers, locations...: who it is from goes first
                await gw.send_to_user(uid, self.head(m.user_name).html)
                user_msg = await gw.copy_to_user(uid, m.message_id, None)
            elif m.media:
                user_msg = await gw.copy_to_user(uid, m.message_id, self.relay_html(m, MAX_CAPTION))
            else:
                user_msg = await gw.send_to_user(uid, self.relay_html(m, MAX_VISIBLE))
        except UserBlocked:
            await self.blocked(t)
            return
        except GatewayError as exc:
            await self.recorder.note(cid, self.texts("agents.desk.note_failed", error=str(exc)[:200]))
            return
        await self.ports.reg.add_relay(m.message_id, cid, user_msg, caption=bool(m.media))
        await self.store.add_entries(
            cid,
            [Entry(Direction.AGENT, f"{m.user_name}: {what}", kind="media" if m.media else "text")],
        )
        await self.queue.agent_answered(t, m.user_name)

    async def blocked(self, t: Topic) -> None:
        await self.store.set_flags(t.conversation_id, active=False)
        await self.recorder.note(t.conversation_id, self.texts("agents.desk.note_blocked"))
        self.topics.mark_card(t)

    async def on_edit(self, m: AgentMessage) -> None:
        assert self.gateway is not None
        gw = self.gateway
        relay = await self.ports.reg.relay(m.message_id)
        if relay is None:  # not sent (yet): a held message takes the new text
            for msgs in self.st.held.values():
                for i, h in enumerate(msgs):
                    if h.message_id == m.message_id:
                        msgs[i] = m
            return
        cid, user_msg, caption = relay
        uid = privacy.telegram_user_id(cid)
        t = self.st.topics.get(cid)
        if uid is None or t is None:
            return
        what = f"[{m.media}] {m.text}".strip() if m.media else m.text
        corrected = False
        try:
            try:
                await gw.edit_user_message(
                    uid,
                    user_msg,
                    self.relay_html(m, MAX_CAPTION if caption else MAX_VISIBLE),
                    caption,
                )
            except NotModified:
                return
            except UserBlocked:
                raise
            except GatewayError as exc:  # too old to edit, deleted by the user...: send a correction
                log.info(
                    "agents: edit of relayed message %s failed (%s); sending a correction",
                    user_msg,
                    exc,
                )
                head = Html("<b>", 0) + self.texts("agents.correction") + Html("</b>", 0)
                await gw.send_to_user(uid, head.html + "\n" + self.relay_html(m, MAX_VISIBLE - 40))
                corrected = True
        except UserBlocked:
            await self.blocked(t)
            return
        except GatewayError as exc:
            await self.recorder.note(cid, self.texts("agents.desk.note_failed", error=str(exc)[:200]))
            return
        await self.store.add_entries(
            cid,
            [
                Entry(
                    Direction.AGENT,
                    f"{m.user_name} (edited): {what}",
                    kind="media" if m.media else "text",
                )
            ],
        )
        if corrected:
            await self.recorder.note(
                cid,
                self.texts(
                    "agents.desk.note_edited",
                    how=self.texts.plain("agents.desk.edited_as_correction"),
                ),
            )

    # -- takeover and hand-back -------------------------------------------------------------------------------------
    async def pause(self, t: Topic, agent: str) -> bool:
        newly = t.paused_until is None
        if newly:
            async with conversation_lock(self.engine, t.conversation_id):
                await self.store.set_flags(t.conversation_id, paused=True)
        t.paused_until = self.clock.now() + self.options.pause_seconds  # each message extends it
        t.paused_by = agent
        await self.ports.reg.save(t)
        self.topics.mark_card(t)
        self.signals.timer_wake.set()
        if newly:
            minutes = str(max(1, round(self.options.pause_seconds / 60)))
            await self.recorder.note(
                t.conversation_id,
                self.texts("agents.desk.note_paused", agent=agent or "?", minutes=minutes),
            )
            await self.queue.takeover_started(t, agent)
        return newly

    async def resume(self, t: Topic, *, agent: str = "", mode: str = "agent") -> None:
        """Hand a conversation back: unpause, note it, and let the engine speak to the user
        (``mode``: agent = continue where it was, menu = main menu, expired = pause ran out,
        waiting = pause ran out over an unanswered message: the customer is told when a person
        will reply and the case goes back to the queue, listed again)."""
        cid = t.conversation_id
        async with conversation_lock(self.engine, cid):
            await self.store.set_flags(cid, paused=False)
        t.paused_until = None
        t.paused_by = ""
        await self.ports.reg.save(t)
        self.topics.mark_card(t)
        await self.queue.takeover_ended(t, agent, waiting=mode == "waiting")
        key = {"menu": "agents.desk.note_handback_menu", "expired": "agents.desk.note_expired"}.get(
            mode, "agents.desk.note_handback_resume"
        )
        minutes = str(max(1, round(self.options.pause_seconds / 60)))
        arg = mode
        if mode == "waiting":
            when = self.queue.reply_when()
            arg = f"waiting {when}"
            await self.recorder.note(cid, self.texts("agents.desk.note_expired", minutes=minutes))
            await self.queue.escalate_note(t, "waiting", self.texts.plain("agents.desk.waiting_requeued", when=when))
        else:
            await self.recorder.note(cid, self.texts(key, agent=agent or "?", minutes=minutes))
        replies = await self.engine.handle(Inbound(cid, EventKind.COMMAND, text=RESUME_COMMAND, arg=arg))
        uid = privacy.telegram_user_id(cid)
        if uid is None or not replies or self.gateway is None:
            return
        try:
            await self.gateway.send_replies(uid, replies)
        except UserBlocked:
            await self.blocked(t)
        except GatewayError as exc:
            await self.recorder.note(cid, self.texts("agents.desk.note_failed", error=str(exc)[:200]))

    async def reconcile_pauses(self) -> None:
        """After a restart: a paused conversation gets an expiry; without a group, none stays paused."""
        paused = await self.store.paused_conversations()
        for cid in paused:
            if not self.ports.enabled:
                log.warning("agents: %s was paused but there is no agents' group: resuming the bot", cid)
                async with conversation_lock(self.engine, cid):
                    await self.store.set_flags(cid, paused=False)
                continue
            t = await self.topics.ensure(cid)
            if t.paused_until is None:
                t.paused_until = self.clock.now() + self.options.pause_seconds
                await self.ports.reg.save(t)
