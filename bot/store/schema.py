"""The database schema as an ordered list of migrations (append only, never edit one).

``PRAGMA user_version`` records how many have run; each runs in its own transaction.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: conversations, transcript, unmatched messages, Telegram update de-duplication
    """
    CREATE TABLE conversations (
        id          TEXT PRIMARY KEY,
        flow        TEXT NOT NULL DEFAULT '',
        step        TEXT NOT NULL DEFAULT '',
        seq         INTEGER NOT NULL DEFAULT 0,
        state_json  TEXT NOT NULL DEFAULT '{}',
        active      INTEGER NOT NULL DEFAULT 1,
        paused      INTEGER NOT NULL DEFAULT 0,
        user_name   TEXT NOT NULL DEFAULT '',
        created_at  REAL NOT NULL,
        updated_at  REAL NOT NULL
    );
    CREATE TABLE messages (
        id              INTEGER PRIMARY KEY,
        conversation_id TEXT NOT NULL,
        ts              REAL NOT NULL,
        direction       TEXT NOT NULL,
        kind            TEXT NOT NULL,
        text            TEXT NOT NULL,
        intent          TEXT,
        score           REAL,
        decision        TEXT,
        flow            TEXT NOT NULL DEFAULT '',
        step            TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX messages_by_conversation ON messages (conversation_id, id);
    CREATE INDEX messages_by_ts ON messages (ts);
    CREATE TABLE unmatched (
        id              INTEGER PRIMARY KEY,
        conversation_id TEXT NOT NULL,
        ts              REAL NOT NULL,
        text            TEXT NOT NULL,
        decision        TEXT NOT NULL,
        candidates_json TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX unmatched_by_ts ON unmatched (ts);
    CREATE TABLE processed_updates (
        update_id INTEGER PRIMARY KEY,
        ts        REAL NOT NULL
    );
    """,
    # 2: quote requests to the lab, their durable outbox, device photos (bot/escalation)
    """
    CREATE TABLE quotes (
        ref             TEXT PRIMARY KEY,
        conversation_id TEXT NOT NULL,
        draft_id        TEXT NOT NULL DEFAULT '',
        created_at      REAL NOT NULL,
        damage          TEXT NOT NULL DEFAULT '',
        device          TEXT NOT NULL DEFAULT '',
        fields_json     TEXT NOT NULL,
        transcript_json TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX quotes_by_conversation ON quotes (conversation_id, created_at);
    CREATE UNIQUE INDEX quotes_by_draft ON quotes (conversation_id, draft_id) WHERE draft_id != '';
    CREATE TABLE outbox (
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
    CREATE INDEX outbox_due ON outbox (status, next_attempt_at);
    CREATE TABLE attachments (
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
    # 3: support agents (bot/agents): a forum topic per conversation, relayed agent messages.
    # messages.id becomes AUTOINCREMENT: ids are durable cursors (the agents' mirror, `watch`)
    # and /forget deleting the newest rows must not let SQLite hand their ids out again.
    """
    CREATE TABLE messages_v3 (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id TEXT NOT NULL,
        ts              REAL NOT NULL,
        direction       TEXT NOT NULL,
        kind            TEXT NOT NULL,
        text            TEXT NOT NULL,
        intent          TEXT,
        score           REAL,
        decision        TEXT,
        flow            TEXT NOT NULL DEFAULT '',
        step            TEXT NOT NULL DEFAULT ''
    );
    INSERT INTO messages_v3 (id, conversation_id, ts, direction, kind, text, intent, score, decision,
                             flow, step)
        SELECT id, conversation_id, ts, direction, kind, text, intent, score, decision, flow, step
        FROM messages;
    DROP TABLE messages;
    ALTER TABLE messages_v3 RENAME TO messages;
    CREATE INDEX messages_by_conversation ON messages (conversation_id, id);
    CREATE INDEX messages_by_ts ON messages (ts);
    CREATE TABLE agent_topics (
        ref             INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id TEXT NOT NULL UNIQUE,
        thread_id       INTEGER,
        topic_name      TEXT NOT NULL DEFAULT '',
        card_message_id INTEGER,
        card_pinned     INTEGER NOT NULL DEFAULT 0,
        card_html       TEXT NOT NULL DEFAULT '',
        topic_cursor    INTEGER NOT NULL DEFAULT 0,
        seen_cursor     INTEGER NOT NULL DEFAULT 0,
        symptom         TEXT NOT NULL DEFAULT '',
        flags           TEXT NOT NULL DEFAULT '',
        paused_until    REAL,
        paused_by       TEXT NOT NULL DEFAULT '',
        quote_state     TEXT NOT NULL DEFAULT '',
        created_at      REAL NOT NULL,
        updated_at      REAL NOT NULL
    );
    CREATE INDEX agent_topics_by_thread ON agent_topics (thread_id);
    CREATE TABLE agent_relays (
        agent_message_id INTEGER PRIMARY KEY,
        conversation_id  TEXT NOT NULL,
        user_message_id  INTEGER NOT NULL,
        caption          INTEGER NOT NULL DEFAULT 0,
        ts               REAL NOT NULL
    );
    CREATE INDEX agent_relays_by_conversation ON agent_relays (conversation_id);
    CREATE TABLE agent_trash (
        thread_id INTEGER PRIMARY KEY,
        ts        REAL NOT NULL
    );
    CREATE TABLE agent_meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 4: the Telegram door's durable intake and replies (bot/tg/queue.py): every update is
    # stored before Telegram is told it arrived, and marked done in its turn's transaction;
    # the turn's messages wait in tg_outbox until Telegram has them; tg_keyboards is the
    # message per chat that carries the live keyboard (retired when a newer one is sent).
    """
    CREATE TABLE tg_inbox (
        update_id   INTEGER PRIMARY KEY,
        body        TEXT NOT NULL,
        status      TEXT NOT NULL DEFAULT 'new',
        received_at REAL NOT NULL,
        done_at     REAL
    );
    CREATE INDEX tg_inbox_by_status ON tg_inbox (status, update_id);
    CREATE TABLE tg_outbox (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        chat_id     INTEGER NOT NULL,
        kind        TEXT NOT NULL,
        priority    INTEGER NOT NULL DEFAULT 0,
        body        TEXT NOT NULL,
        update_id   INTEGER,
        status      TEXT NOT NULL DEFAULT 'pending',
        attempts    INTEGER NOT NULL DEFAULT 0,
        last_error  TEXT NOT NULL DEFAULT '',
        message_id  INTEGER,
        created_at  REAL NOT NULL,
        sent_at     REAL
    );
    CREATE INDEX tg_outbox_by_status ON tg_outbox (status, id);
    CREATE TABLE tg_keyboards (
        chat_id    INTEGER PRIMARY KEY,
        message_id INTEGER NOT NULL,
        ts         REAL NOT NULL
    );
    """,
    # 5: anonymous counters per local day (bot/store/counters.py): no ids, names or texts, so
    # an erasure keeps the figures. Filled from what the file already holds, so the figures of
    # an upgraded bot do not start again from zero.
    """
    CREATE TABLE counters (
        day  TEXT NOT NULL,
        name TEXT NOT NULL,
        n    INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (day, name)
    ) WITHOUT ROWID;
    INSERT INTO counters (day, name, n)
        SELECT date(ts, 'unixepoch', 'localtime'), 'conversations', COUNT(DISTINCT conversation_id)
        FROM messages GROUP BY 1;
    INSERT INTO counters (day, name, n)
        SELECT date(ts, 'unixepoch', 'localtime'), 'match:' || decision, COUNT(*)
        FROM messages WHERE direction = 'in' AND decision IS NOT NULL GROUP BY 1, 2;
    INSERT INTO counters (day, name, n)
        SELECT date(ts, 'unixepoch', 'localtime'), 'resolved', COUNT(DISTINCT conversation_id)
        FROM messages WHERE direction = 'out' AND flow = 'common' AND step = 'resolved' GROUP BY 1;
    INSERT INTO counters (day, name, n)
        SELECT date(ts, 'unixepoch', 'localtime'), 'flow:' || flow, COUNT(DISTINCT conversation_id)
        FROM messages WHERE direction = 'out' AND flow NOT IN ('', 'main_menu', 'common') GROUP BY 1, 2;
    INSERT INTO counters (day, name, n)
        SELECT date(ts, 'unixepoch', 'localtime'), kind, COUNT(*)
        FROM messages WHERE direction = 'note' AND kind LIKE 'escalation:%' GROUP BY 1, 2;
    INSERT INTO counters (day, name, n)
        SELECT date(created_at, 'unixepoch', 'localtime'), 'event:quote_sent', COUNT(*) FROM quotes GROUP BY 1;
    """,
    # 6: examples agents taught the matcher (bot/store/learned.py): a message and the intent it
    # means ("none" = out of scope); read by the running bot at once, exported for review.
    """
    CREATE TABLE learned_examples (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        text       TEXT NOT NULL,
        intent     TEXT NOT NULL,
        source     TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        UNIQUE (text, intent)
    );
    """,
]
