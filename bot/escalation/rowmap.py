"""The quote feature's rows and records: an ``outbox`` row as an ``OutboxRow``, a request's
fields as the JSON kept in ``quotes.fields_json`` — and who owns an outbox row's lease
(``<host>:<pid>:<n>``: a process on this host that no longer runs has left its rows).
Used by ``store.QuoteStore``.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from .ports import OutboxRow, QuoteFields

OUTBOX_COLUMNS = (
    "id, ref, channel, status, attempts, next_attempt_at, message_id, last_error, error_kind, "
    "accepted, delivered_at, alert_state, created_at, owner"
)


def outbox_row(r: Sequence[Any]) -> OutboxRow:
    return OutboxRow(
        int(r[0]),
        r[1],
        r[2],
        r[3],
        int(r[4]),
        float(r[5]),
        r[6],
        r[7],
        r[8],
        r[9],
        r[10],
        r[11],
        float(r[12]),
        r[13],
    )


def fields_to_json(fields: QuoteFields) -> str:
    return json.dumps(asdict(fields), ensure_ascii=False)


def fields_from_json(raw: str) -> QuoteFields:
    d = json.loads(raw)
    return QuoteFields(
        device=str(d.get("device", "")),
        damage=str(d.get("damage", "")),
        passcode=str(d.get("passcode", "")),
        passcode_go_on=bool(d.get("passcode_go_on", False)),
        data=tuple(d.get("data", ())),
        backup=str(d.get("backup", "")),
        name=str(d.get("name", "")),
        email=str(d.get("email", "")),
        phone=str(d.get("phone", "")),
        photos=tuple(d.get("photos", ())),
        consent_at=float(d.get("consent_at", 0.0)),
        description=str(d.get("description", "")),
    )


def local_owner_prefix() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:"


def owner_is_dead(owner: str) -> bool:
    """True only when ``owner`` names a process on this host that no longer runs."""
    host, _, rest = owner.partition(":")
    pid_s = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_s.isdigit():
        return False
    pid = int(pid_s)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
