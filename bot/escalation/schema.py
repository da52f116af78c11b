"""The quote feature's tables: its migrations, in order (append only, never edit one).

Run by ``Database.migrate("quotes", MIGRATIONS)`` — by ``open_runtime`` for the feature and by
``QuoteStore.open`` for the tools that open the file alone (``python -m bot outbox``). The
first one is what the conversation store's step 2 created before the tables moved here; on
such a database it finds them in place (``IF NOT EXISTS``).
"""

from __future__ import annotations

OWNER = "quotes"

MIGRATIONS: list[str] = [
    # 1: quote requests to the lab, their durable outbox, device photos
    """
    CREATE TABLE IF NOT EXISTS quotes (
        ref             TEXT PRIMARY KEY,
        conversation_id TEXT NOT NULL,
        draft_id        TEXT NOT NULL DEFAULT '',
        created_at      REAL NOT NULL,
        damage          TEXT NOT NULL DEFAULT '',
        device          TEXT NOT NULL DEFAULT '',
        fields_json     TEXT NOT NULL,
        transcript_json TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX IF NOT EXISTS quotes_by_conversation ON quotes (conversation_id, created_at);
    CREATE UNIQUE INDEX IF NOT EXISTS quotes_by_draft ON quotes (conversation_id, draft_id) WHERE draft_id != '';
    CREATE TABLE IF NOT EXISTS outbox (
        id              INTEGER PRIMARY KEY,
        ref             TEXT NOT NULL REFERENCES quotes (ref),
        channel         TEXT NOT NULL,
        message_id      TEXT NOT NULL DEFAULT '',
        status          TEXT NOT NULL DEFAULT 'pending',
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        owner           TEXT NOT NULL DEFAULT '',
        lease_until     REAL NOT NULL DEFAULT 0,
        last_error      TEXT NOT NULL DEFAULT '',
        error_kind      TEXT NOT NULL DEFAULT '',
        accepted        TEXT NOT NULL DEFAULT '',
        delivered_at    REAL,
        alert_state     TEXT NOT NULL DEFAULT '',
        created_at      REAL NOT NULL,
        updated_at      REAL NOT NULL,
        UNIQUE (ref, channel)
    );
    CREATE INDEX IF NOT EXISTS outbox_due ON outbox (status, next_attempt_at);
    CREATE TABLE IF NOT EXISTS attachments (
        id       INTEGER PRIMARY KEY,
        ref      TEXT NOT NULL REFERENCES quotes (ref),
        position INTEGER NOT NULL,
        kind     TEXT NOT NULL DEFAULT 'photo',
        file_id  TEXT NOT NULL,
        status   TEXT NOT NULL DEFAULT 'pending',
        mime     TEXT NOT NULL DEFAULT '',
        data     BLOB,
        UNIQUE (ref, position)
    );
    """,
    # 2: the anonymous day counters (the conversation store's step 5) learn the requests sent
    # before they existed; a day already counted is left as it is
    """
    INSERT OR IGNORE INTO counters (day, name, n)
        SELECT date(created_at, 'unixepoch', 'localtime'), 'event:quote_sent', COUNT(*) FROM quotes GROUP BY 1;
    """,
]
