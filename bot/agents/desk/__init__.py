"""The agents' desk, in parts (see ``desk.py`` for the whole shape):

* ``records`` — options, required texts, what agents do (plain records), the engine's lock;
* ``state`` — ``DeskState``, the mirror's working state;
* ``wiring`` — ``DeskPorts`` (engine, store, group, budget, clock, texts) and ``Signals``:
  what every part is built with, besides the state and the few other parts it calls;
* ``topics`` — the topic cache, topics created, renamed, dropped;
* ``posts`` — sending recorded (and answers to agents), cleaning up after an erasure;
* ``desk`` — ``AgentDesk``: wiring, lifecycle, the engine listener, waiting (tests, bench);
* ``recorder`` — turns in, NOTE lines (flags, escalations, notes) out;
* ``backlog`` — fresh transcript rows read into memory, cursors;
* ``writer`` — the only caller into the group: what goes out next, a topic's lines and media;
* ``feed`` — the Live feed and the Escalations topic;
* ``cards`` — the pinned case cards;
* ``takeover`` — relaying agents' messages, pause and hand-back;
* ``queue`` — escalation items (open / claimed / resolved), waiting alerts, the desk's figures;
* ``timers`` — pause expiry, waiting alerts, retention, quote deliveries;
* ``tools`` — the agents' commands.
"""

from .desk import AgentDesk
from .records import (
    AGENT_ONLY_COMMANDS,
    REQUIRED_KEYS,
    AgentCallback,
    AgentCommand,
    AgentMessage,
    DeskOptions,
    UserMedia,
    check_content,
    conversation_lock,
)

__all__ = [
    "AGENT_ONLY_COMMANDS",
    "REQUIRED_KEYS",
    "AgentCallback",
    "AgentCommand",
    "AgentDesk",
    "AgentMessage",
    "DeskOptions",
    "UserMedia",
    "check_content",
    "conversation_lock",
]
