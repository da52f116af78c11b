"""The terminal door: a conversation with the engine on stdin/stdout.

Interactive on a terminal; line by line when stdin is a pipe (one user message per line,
replies flushed after each turn, buttons as numbered options, exit at end of input), so
another program can converse with it. Holds no conversation state: only the buttons last
shown, to turn "2" or a label into a press.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import TextIO

from bot.core.engine import Engine
from bot.core.messages import Button, EventKind, Inbound, Reply

log = logging.getLogger(__name__)


def render(reply: Reply) -> str:
    """Plain text: the bold markers dropped, buttons as numbered options."""
    lines = [reply.text.replace("**", "")]
    for i, b in enumerate(reply.buttons, 1):
        lines.append(f"  [{i}] {b.label}")
    return "\n".join(lines)


def to_inbound(conversation_id: str, line: str, buttons: Sequence[Button]) -> Inbound:
    text = line.strip()
    if text.startswith("/") and len(text) > 1 and not text[1].isspace():
        name, _, arg = text[1:].partition(" ")
        return Inbound(conversation_id, EventKind.COMMAND, text=name, arg=arg.strip())
    if text.isdecimal() and len(text) <= 6 and buttons and 1 <= int(text) <= len(buttons):
        return Inbound(conversation_id, EventKind.BUTTON, payload=buttons[int(text) - 1].id)
    for b in buttons:
        if text.casefold() == b.label.casefold().lstrip("✓ "):
            return Inbound(conversation_id, EventKind.BUTTON, payload=b.id)
    return Inbound(conversation_id, EventKind.TEXT, text=line.rstrip("\n"))


async def _read_line(stream: TextIO, prompt: str) -> str | None:
    if prompt:
        sys.stdout.write(prompt)
        sys.stdout.flush()
    line = await asyncio.to_thread(stream.readline)
    return line if line else None


async def chat(engine: Engine, conversation_id: str, *, stdin: TextIO | None = None,
               out: TextIO | None = None, greet: bool = True, banner: str = "") -> None:
    stdin = stdin or sys.stdin
    out = out or sys.stdout
    interactive = stdin.isatty()
    buttons: list[Button] = []

    def show(replies: Sequence[Reply]) -> None:
        nonlocal buttons
        for r in replies:
            out.write(render(r) + "\n")
            if r.buttons:
                buttons = list(r.buttons)
        out.write("\n")
        out.flush()

    if banner and interactive:
        out.write(banner + "\n\n")
    if greet and interactive:  # a program on a pipe speaks first, as a Telegram user would
        state = await engine.state_of(conversation_id)
        if state is None:
            show(await engine.handle(Inbound(conversation_id, EventKind.COMMAND, text="start")))
    while True:
        line = await _read_line(stdin, "you> " if interactive else "")
        if line is None:
            break
        if interactive and line.strip() in ("/quit", "/exit"):
            break
        if not line.strip():
            if interactive:
                continue
        try:
            replies = await engine.handle(to_inbound(conversation_id, line, buttons))
        except Exception:  # the one broad catch of this door: the state was not saved
            log.exception("turn failed for %s", conversation_id)
            replies = (Reply(engine.content.text("engine.internal_error"), key="engine.internal_error"),)
        show(replies)
