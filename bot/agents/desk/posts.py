"""Posts that carry a user's data, outside the user's own topic: recorded when sent, cleaned
up after an erasure or when they expire.

Every message the desk posts about users (Escalations and Live-feed lines, /find results,
transcripts and answers sent to agents in the group or privately, confirmations) goes through
``Posts.post`` / ``post_document`` / ``post_private`` / ``post_private_document`` with the
conversation ids it is about (``about``) — or, for a shared message that can be edited
(several users' lines), its parts, one per conversation (``parts``; ``None``: a heading).
They are recorded in ``agent_posts`` (``registry.add_post``). Lines in a user's own topic are
not recorded: the topic is deleted whole.

``/forget`` and the retention purge mark the posts (``privacy.forget_conversation``,
``registry.expire_posts``); the writer then cleans them up at urgent priority within the
group's budget (``clean_step``): up to 100 messages deleted in one call, a shared message
edited to what is left of it. A message Telegram refuses to delete is edited to a placeholder.
"""


from __future__ import annotations

import logging
import sqlite3
import time
from collections import deque
from collections.abc import Iterable, Sequence

from bot.store.database import StoreError

from ..ports import GatewayError, MessageGone, NotModified, RetryLater, Sent
from ..render import MAX_VISIBLE, Html, fit, join
from ..rows import Post
from .records import AgentCallback, AgentCommand
from .wiring import Part

log = logging.getLogger(__name__)

Parts = Sequence[tuple[str | None, Html]]


class Posts(Part):
    """Sending into the group (and privately to agents), recorded; cleaning up. Built with
    the ports, the state (``clean``, ``recheck``, ``erased_at``, ``urgent``) and the signals."""

    # -- sending, recorded --------------------------------------------------------------------------
    async def post(
        self,
        thread: int | None,
        html: str,
        buttons: Sequence[tuple[str, str]] = (),
        *,
        kind: str,
        about: Iterable[str] = (),
        parts: Parts | None = None,
        made: float | None = None,
    ) -> Sent:
        """Send into the group (the caller counts the call against the budget) and record it.
        ``made``: when its content was read (``time.monotonic``; default now)."""
        assert self.gateway is not None
        made = made if made is not None else time.monotonic()
        sent = await self.gateway.send(thread, html, buttons)
        await self.record(sent.message_id, kind, about, parts, made, thread_id=thread)
        return sent

    async def post_document(
        self,
        thread: int | None,
        filename: str,
        data: bytes,
        caption: str,
        *,
        kind: str,
        about: Iterable[str],
        made: float | None = None,
    ) -> Sent:
        assert self.gateway is not None
        made = made if made is not None else time.monotonic()
        sent = await self.gateway.send_document(thread, filename, data, caption)
        await self.record(sent.message_id, kind, about, None, made, thread_id=thread)
        return sent

    async def post_private(
        self,
        chat_id: int,
        html: str,
        buttons: Sequence[tuple[str, str]] = (),
        *,
        kind: str,
        about: Iterable[str] = (),
        made: float | None = None,
    ) -> int:
        assert self.gateway is not None
        made = made if made is not None else time.monotonic()
        message_id = await self.gateway.send_private(chat_id, html, buttons)
        await self.record(message_id, kind, about, None, made, private_chat=chat_id)
        return message_id

    async def post_private_document(
        self,
        chat_id: int,
        filename: str,
        data: bytes,
        caption: str,
        *,
        kind: str,
        about: Iterable[str],
        made: float | None = None,
    ) -> int:
        assert self.gateway is not None
        made = made if made is not None else time.monotonic()
        message_id = await self.gateway.send_private_document(chat_id, filename, data, caption)
        await self.record(message_id, kind, about, None, made, private_chat=chat_id)
        return message_id

    async def record(
        self,
        message_id: int,
        kind: str,
        about: Iterable[str],
        parts: Parts | None,
        made: float,
        *,
        thread_id: int | None = None,
        private_chat: int | None = None,
    ) -> None:
        if parts is not None:
            rows = [(cid, h.html) for cid, h in parts]
        else:
            rows = [(cid, "") for cid in dict.fromkeys(about)]
        if not any(cid for cid, _ in rows):
            return  # about nobody
        late = {cid for cid, _ in rows if cid and self.st.erased_at.get(cid, -1.0) >= made}
        if late:  # made before an erasure that has finished meanwhile: cleaned up at once
            self.st.recheck |= late
            self.st.trash_dirty = True
            self.signals.wake.set()
        try:
            await self.ports.reg.add_post(
                message_id,
                kind,
                rows,
                thread_id=thread_id,
                private_chat=private_chat,
                editable=parts is not None,
            )
        except (sqlite3.Error, StoreError):
            self.ports.errors += 1
            log.exception("agents: recording posted message %s (%s) failed", message_id, kind)

    async def reply(
        self,
        c: AgentCommand | AgentCallback,
        html: Html,
        *,
        about: Sequence[str] = (),
        buttons: Sequence[tuple[str, str]] = (),
        kind: str = "answer",
    ) -> None:
        """Answer an agent where they asked; ``about``: the conversations whose data the answer
        shows (recorded, so /forget and the retention purge remove it)."""
        assert self.gateway is not None
        text = fit(html).html if html.visible > MAX_VISIBLE else html.html
        made = self.st.work_started or time.monotonic()  # the data was read after this
        if c.chat_id != self.chat_id:  # a private chat
            try:
                await self.post_private(c.chat_id, text, buttons, kind=kind, about=about, made=made)
            except GatewayError as exc:
                log.info("agents: answer to %s not sent: %s", c.chat_id, exc)
            return
        thread = c.thread_id
        self.st.urgent.append(lambda: self.post(thread, text, buttons, kind=kind, about=about, made=made))
        self.signals.wake.set()

    # -- cleaning up --------------------------------------------------------------------------------
    async def load_clean(self) -> None:
        while self.st.recheck:
            await self.ports.reg.mark_posts_now(self.st.recheck.pop())
        self.st.clean = deque(await self.ports.reg.posts_to_clean())

    async def clean_step(self) -> bool:
        """One call: delete a batch of recorded messages, or edit one shared message."""
        assert self.gateway is not None
        gw = self.gateway
        if not self.st.clean:
            return False
        head = self.st.clean[0]
        if head.cleanup == 1 and head.editable and head.private_chat is None:
            parts = await self.ports.reg.post_parts(head.id)
            if any(cid for cid, _ in parts):  # others' lines remain: edit the erased ones out
                self.st.clean.popleft()
                sep = Html("\n\n", 2) if head.kind == "feed" else Html("\n", 1)
                html = join((Html(h, 0) for _, h in parts), sep).html
                try:
                    await self.ports.call(True, lambda: gw.edit(head.message_id, html))
                except (MessageGone, NotModified):
                    pass
                except RetryLater:
                    self.st.clean.appendleft(head)
                    raise
                except GatewayError as exc:
                    log.warning("agents: editing an erased line out of message %s failed: %s", head.message_id, exc)
                await self.ports.reg.post_cleaned(head.id)
                return True
        chat = head.private_chat
        batch: list[Post] = []
        rest: deque[Post] = deque()
        while self.st.clean:
            p = self.st.clean.popleft()
            keep_whole = p.cleanup == 1 and p.editable and p.private_chat is None and p is not head
            if p.private_chat == chat and len(batch) < 100 and not keep_whole:
                batch.append(p)
            else:
                rest.append(p)
        self.st.clean = rest
        ids = [p.message_id for p in batch]
        try:
            await self.ports.call(True, lambda: gw.delete_messages(ids, chat))
        except RetryLater:
            self.st.clean.extendleft(reversed(batch))
            raise
        except MessageGone:
            if chat is None:  # too old to delete: the text at least goes
                self.blank(batch)
        except GatewayError as exc:
            log.warning("agents: deleting %d posted message(s) failed (%s); not retried", len(ids), exc)
        await self.ports.reg.drop_posts([p.id for p in batch])
        return True

    def blank(self, posts: list[Post]) -> None:
        """Edit each to a placeholder, one urgent call each (a failure is logged, not retried)."""
        assert self.gateway is not None
        gw = self.gateway
        html = self.texts("agents.desk.post_erased").html
        for p in posts:
            self.st.urgent.append(lambda mid=p.message_id: gw.edit(mid, html))
