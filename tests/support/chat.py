"""A transcript-style driver for the engine: say / press / command, then look at replies.

Like errbot's test backend: tests read as a conversation. Buttons are pressed by their
local id (``"yes"``, ``"intent:storage_full"``), exactly as a door would send them back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.core.engine import Engine
from bot.core.messages import Button, EventKind, Inbound, Reply
from bot.core.ports import State


def local_id(button: Button) -> str:
    return button.id.partition(":")[2]


@dataclass
class ChatDriver:
    engine: Engine
    conversation_id: str = "test:1"
    replies: tuple[Reply, ...] = ()
    buttons: tuple[Button, ...] = field(default_factory=tuple)  # the latest keyboard shown

    async def _send(self, inbound: Inbound) -> tuple[Reply, ...]:
        self.replies = await self.engine.handle(inbound)
        for r in self.replies:
            if r.buttons:
                self.buttons = r.buttons
        return self.replies

    async def say(self, text: str) -> tuple[Reply, ...]:
        return await self._send(Inbound(self.conversation_id, EventKind.TEXT, text=text))

    async def command(self, line: str) -> tuple[Reply, ...]:
        name, _, arg = line.lstrip("/").partition(" ")
        return await self._send(Inbound(self.conversation_id, EventKind.COMMAND, text=name, arg=arg.strip()))

    async def press(self, bid: str) -> tuple[Reply, ...]:
        for b in self.buttons:
            if local_id(b) == bid:
                return await self._send(Inbound(self.conversation_id, EventKind.BUTTON, payload=b.id))
        raise AssertionError(f"no button {bid!r} on offer; offered: {self.button_ids}")

    async def press_payload(self, payload: str) -> tuple[Reply, ...]:
        return await self._send(Inbound(self.conversation_id, EventKind.BUTTON, payload=payload))

    async def send(self, inbound: Inbound) -> tuple[Reply, ...]:
        return await self._send(inbound)

    @property
    def text(self) -> str:
        return "\n\n".join(r.text for r in self.replies)

    @property
    def keys(self) -> list[str]:
        return [r.key for r in self.replies]

    @property
    def button_ids(self) -> list[str]:
        return [local_id(b) for b in self.buttons]

    @property
    def last_buttons(self) -> list[str]:
        """Button ids on this turn's last reply that has buttons ([] if none this turn)."""
        for r in reversed(self.replies):
            if r.buttons:
                return [local_id(b) for b in r.buttons]
        return []

    async def state(self) -> State:
        st = await self.engine.state_of(self.conversation_id)
        assert st is not None
        return st
