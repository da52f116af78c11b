"""What a turn sends, as outgoing jobs (``JobSpec``) for the durable queue.

* ``messages``: replies joined into as few Telegram messages as fit (``render.compose``), the
  keyboard on the last; an answer to a user is ``ANSWER`` priority, other chats housekeeping.
* ``plan``: a turn's jobs. Typed text: its messages. A press: the answer as one message plus
  one edit of the pressed message showing the choice without the keyboard (housekeeping);
  when the answer is the pressed step again with new buttons (a multi-select tap), that
  message is edited in place instead — one call; a stale press or a double tap raises
  ``StalePress`` (the door answers with the toast only and the turn changes nothing).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from bot.core.messages import Reply

from .render import MAX_MESSAGE, compose, tg_len, visible
from .store import ANSWER, HOUSEKEEPING, JobSpec
from .updates import Press, Work

STALE_KEY = "engine.stale_button"
CHOICE_MARK = "» "


class StalePress(Exception):
    """Raised inside the turn's transaction: a stale press or a double tap changes nothing."""

    def __init__(self, notice: str) -> None:
        super().__init__(notice)
        self.notice = notice


def messages(
    chat_id: int, replies: Sequence[Reply], *, thread_id: int | None = None, priority: int | None = None
) -> list[JobSpec]:
    prio = priority if priority is not None else (ANSWER if chat_id > 0 else HOUSEKEEPING)
    specs = []
    for html_text, keyboard in compose(replies):
        body: dict[str, Any] = {"html": html_text}
        if keyboard:
            body["keyboard"] = keyboard
        if thread_id is not None:
            body["thread_id"] = thread_id
        specs.append(JobSpec(chat_id, "send", prio, body))
    return specs

def plan(work: Work, replies: Sequence[Reply]) -> tuple[list[JobSpec], tuple[int, int] | None]:
    """The jobs of one turn, and the (chat, message) whose keyboard it used up."""
    cq = work.callback
    if cq is None:
        return messages(work.chat_id, replies), None
    if replies and replies[0].key == STALE_KEY:
        raise StalePress(replies[0].notice or visible(replies[0].text))
    if cq.message_id is None:  # an inline-mode message, or one too old to edit
        return messages(work.chat_id, replies), None
    composed = compose(replies)
    if len(composed) == 1 and composed[0][1] and cq.text and _same_text(replies, cq.text):
        # the same step again with new buttons (a multi-select tap): edit it in place
        html_text, keyboard = composed[0]
        edit = {"message_id": cq.message_id, "html": html_text, "keyboard": keyboard}
        return [JobSpec(work.chat_id, "edit", ANSWER, edit)], None
    specs = messages(work.chat_id, replies)
    specs.append(JobSpec(work.chat_id, "edit", HOUSEKEEPING, _choice_edit(cq, cq.data or "")))
    return specs, (work.chat_id, cq.message_id)


def _same_text(replies: Sequence[Reply], shown: str) -> bool:
    joined = "\n\n".join(r.text.strip("\n") for r in replies if r.text.strip())
    return visible(joined).strip() == shown.strip()


def _choice_edit(msg: Press, data: str) -> dict[str, Any]:
    """The pressed message with the choice under it and no keyboard (one editMessageText), or
    just without the keyboard when the label is unknown or the text would get too long."""
    label = ""
    for text, callback_data in msg.buttons:
        if callback_data == data:
            label = text
    if msg.text and label and tg_len(msg.text) + tg_len(CHOICE_MARK + label) + 2 <= MAX_MESSAGE:
        shown = f"{msg.text_html}\n\n{html.escape(CHOICE_MARK + label, quote=False)}"
        return {"message_id": msg.message_id, "html": shown, "keyboard": None}
    return {"message_id": msg.message_id, "html": None, "keyboard": None}
