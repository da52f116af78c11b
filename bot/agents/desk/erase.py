"""/forget: administrators only (``ADMIN_IDS``; with ``FORGET_BY_GROUP_ADMINS=1`` also the group's
administrators), confirmed with a button that names the case (the user asked / the team
decided / cancel); then the conversation is erased everywhere — database, topic, posts — and
the user told. ``forget`` is also what the feature calls for an agent's erasure.
"""

from __future__ import annotations

import contextlib
import logging

from .. import privacy
from ..ports import GatewayError, MessageGone, NotModified
from ..render import display_name
from .posts import Posts
from .records import CALLBACK_PREFIX, CASE_ARG, AgentCallback, AgentCommand, conversation_lock
from .state import DeskState
from .topics import Topics
from .wiring import DeskPorts, Part, Signals

log = logging.getLogger(__name__)


class Erase(Part):
    """Who may erase, the confirmation, the erasure."""

    def __init__(self, ports: DeskPorts, st: DeskState, signals: Signals, topics: Topics, posts: Posts) -> None:
        super().__init__(ports, st, signals)
        self.topics = topics
        self.posts = posts

    async def may_erase(self, user_id: int) -> bool:
        """ADMIN_IDS; with FORGET_BY_GROUP_ADMINS=1 also the group's administrators."""
        if user_id in self.ports.admin_ids:
            return True
        if not self.options.forget_by_group_admins or self.gateway is None:
            return False
        try:
            return await self.gateway.is_admin(user_id)
        except GatewayError:
            return False

    def case(self, c: AgentCommand) -> str | None:
        """The one case a /forget names, or None if it names none or is ambiguous: in a user's
        topic, that topic's case (an argument must name the same one); elsewhere — General, a
        private chat — exactly ``#N`` (or ``N``)."""
        here = self.st.by_thread.get(c.thread_id) if not c.private and c.thread_id is not None else None
        arg = c.arg.strip()
        if not arg:
            return here
        m = CASE_ARG.fullmatch(arg)
        named = self.st.by_ref.get(int(m.group(1))) if m else None
        if named is None or (here is not None and named != here):
            return None
        return named

    async def cmd_forget(self, c: AgentCommand) -> None:
        if not await self.may_erase(c.user_id):
            log.info("agents: /forget by %s refused (not an administrator)", c.user_id)
            await self.posts.reply(c, self.texts("agents.desk.forget_refused"))
            return
        cid = self.case(c)
        t = self.st.topics.get(cid) if cid else None
        if t is None:
            await self.posts.reply(c, self.texts("agents.desk.forget_usage"))
            return
        ref = str(t.ref)
        html = self.texts(
            "agents.desk.forget_confirm",
            ref=ref,
            name=display_name(t.user_name, self.texts),
            symptom=self.topics.symptom_title(t.symptom) or "-",
        )
        buttons = [
            (self.texts.plain("agents.desk.btn_forget_asked", ref=ref), f"{CALLBACK_PREFIX}fu:{ref}"),
            (self.texts.plain("agents.desk.btn_forget_team", ref=ref), f"{CALLBACK_PREFIX}ft:{ref}"),
            (self.texts.plain("agents.desk.btn_forget_cancel"), f"{CALLBACK_PREFIX}fx:{ref}"),
        ]
        await self.posts.reply(c, html, about=[t.conversation_id], buttons=buttons, kind="confirm")

    async def on_press(self, cb: AgentCallback, kind: str, ref: int) -> None:
        assert self.gateway is not None
        gw = self.gateway
        if not await self.may_erase(cb.user_id):
            with contextlib.suppress(GatewayError):
                await gw.answer_callback(cb.callback_id, self.texts.plain("agents.desk.forget_refused"))
            return
        cid = self.st.by_ref.get(ref)
        with contextlib.suppress(GatewayError):
            await gw.answer_callback(cb.callback_id)
        if cid is None or kind == "fx":
            key = "agents.desk.forget_cancelled" if kind == "fx" else "agents.desk.unknown_ref"
            html = self.texts(key, ref=str(ref), agent=cb.user_name or "?").html
            if cb.chat_id != self.chat_id:  # a private chat: outside the group's budget
                with contextlib.suppress(NotModified, MessageGone, GatewayError):
                    await gw.edit_private(cb.chat_id, cb.message_id, html)
                return
            message_id = cb.message_id

            async def edit() -> None:
                with contextlib.suppress(NotModified, MessageGone):
                    await gw.edit(message_id, html)

            self.st.urgent.append(edit)
            self.signals.wake.set()
            return
        await self.forget(cid)  # the confirmation message goes with the rest of the case
        uid = privacy.telegram_user_id(cid)
        if uid is not None:
            key = "agents.forgotten_on_request" if kind == "fu" else "agents.forgotten_by_agent"
            try:
                await gw.send_to_user(uid, self.texts(key).html)
            except GatewayError as exc:
                log.info("agents: could not tell %s about the deletion: %s", cid, exc)
        note = self.texts("agents.desk.note_forgotten", agent=cb.user_name or "?", ref=str(ref))
        if cb.chat_id != self.chat_id:
            await self.posts.reply(cb, note)
            return
        self.st.urgent.append(lambda: gw.send(None, note.html))
        self.signals.wake.set()

    async def forget(self, conversation_id: str) -> None:
        """Erase one conversation everywhere (database, its topic) — an agent's /forget."""
        self.topics.forgetting(conversation_id)
        try:
            async with conversation_lock(self.engine, conversation_id):
                await privacy.forget_conversation(self.store.db, conversation_id, lock=self.ports.tx_lock)
        finally:
            self.topics.forgotten(conversation_id, await self.ports.reg.max_message_id())
