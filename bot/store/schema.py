"""The conversation store's schema (and the Telegram door's queue): an ordered list of
migrations per engine, append only — a new table here is a new entry at the end of both
``MIGRATIONS`` (SQLite) and ``POSTGRES_MIGRATIONS``, numbered alike.

They run through ``Database.migrate("conversations", BY_DIALECT)`` like every feature's
(``schema_versions``), each in its own transaction. A SQLite file made before that counted
them in ``PRAGMA user_version``: its count is taken over once (``SQLiteStore``), and
``user_version`` is still kept equal, so an older bot refuses a newer file. A
feature's tables are the feature's own list (``Feature.migrations()``, recorded per owner in
``schema_versions``): bot/escalation/schema.py, bot/agents/schema.py. Steps 2 and 3 created
those tables before they moved; a database made then has them, and the features' first
migrations (``IF NOT EXISTS``) find them in place.
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
    # 2: (quote requests: their tables moved to the quote feature's own migrations,
    # bot/escalation/schema.py; this step stays, empty, so the numbers of the others hold)
    """
    SELECT 1;
    """,
    # 3: messages.id becomes AUTOINCREMENT: ids are durable cursors (the agents' mirror, `watch`)
    # and /forget deleting the newest rows must not let SQLite hand their ids out again.
    # (The agents' tables that came with this step are the agents feature's own migrations
    # now: bot/agents/schema.py.)
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
    """,
    # 4: the Telegram door's durable intake and replies (bot/tg/store.py): every update is
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
    # an upgraded bot do not start again from zero. (Quotes sent are counted from the quote
    # feature's own table by its migration 2: bot/escalation/schema.py.)
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
    # 7: processed_updates (step 1) has been unused since the Telegram door keeps update ids in
    # tg_inbox (step 4): dropped. Step 1 stays as it shipped.
    """
    DROP TABLE IF EXISTS processed_updates;
    """,
]

#: The same steps on PostgreSQL, numbered alike (step N makes what SQLite's step N makes; a
#: step with nothing to do there is ``SELECT 1`` with a comment saying why). Append to both.
POSTGRES_MIGRATIONS: list[str] = [
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
        created_at  DOUBLE PRECISION NOT NULL,
        updated_at  DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE messages (
        id              BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        conversation_id TEXT NOT NULL,
        ts              DOUBLE PRECISION NOT NULL,
        direction       TEXT NOT NULL,
        kind            TEXT NOT NULL,
        text            TEXT NOT NULL,
        intent          TEXT,
        score           DOUBLE PRECISION,
        decision        TEXT,
        flow            TEXT NOT NULL DEFAULT '',
        step            TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX messages_by_conversation ON messages (conversation_id, id);
    CREATE INDEX messages_by_ts ON messages (ts);
    CREATE TABLE unmatched (
        id              BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        conversation_id TEXT NOT NULL,
        ts              DOUBLE PRECISION NOT NULL,
        text            TEXT NOT NULL,
        decision        TEXT NOT NULL,
        candidates_json TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX unmatched_by_ts ON unmatched (ts);
    CREATE TABLE processed_updates (
        update_id BIGINT PRIMARY KEY,
        ts        DOUBLE PRECISION NOT NULL
    );
    """,
    # 2: (the quote tables' old home; empty on SQLite too)
    """
    SELECT 1;
    """,
    # 3: (messages.id never handed out twice: an identity column already never reuses a value)
    """
    SELECT 1;
    """,
    # 4: the Telegram door's durable intake and replies
    """
    CREATE TABLE tg_inbox (
        update_id   BIGINT PRIMARY KEY,
        body        TEXT NOT NULL,
        status      TEXT NOT NULL DEFAULT 'new',
        received_at DOUBLE PRECISION NOT NULL,
        done_at     DOUBLE PRECISION
    );
    CREATE INDEX tg_inbox_by_status ON tg_inbox (status, update_id);
    CREATE TABLE tg_outbox (
        id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        chat_id     BIGINT NOT NULL,
        kind        TEXT NOT NULL,
        priority    INTEGER NOT NULL DEFAULT 0,
        body        TEXT NOT NULL,
        update_id   BIGINT,
        status      TEXT NOT NULL DEFAULT 'pending',
        attempts    INTEGER NOT NULL DEFAULT 0,
        last_error  TEXT NOT NULL DEFAULT '',
        message_id  BIGINT,
        created_at  DOUBLE PRECISION NOT NULL,
        sent_at     DOUBLE PRECISION
    );
    CREATE INDEX tg_outbox_by_status ON tg_outbox (status, id);
    CREATE TABLE tg_keyboards (
        chat_id    BIGINT PRIMARY KEY,
        message_id BIGINT NOT NULL,
        ts         DOUBLE PRECISION NOT NULL
    );
    """,
    # 5: anonymous counters per local day (nothing to fill from: a PostgreSQL database starts
    # empty; an existing installation's figures come with `python -m bot migrate-db`)
    """
    CREATE TABLE counters (
        day  TEXT NOT NULL,
        name TEXT NOT NULL,
        n    BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (day, name)
    );
    """,
    # 6: examples agents taught the matcher
    """
    CREATE TABLE learned_examples (
        id         BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        text       TEXT NOT NULL,
        intent     TEXT NOT NULL,
        source     TEXT NOT NULL DEFAULT '',
        created_at DOUBLE PRECISION NOT NULL,
        UNIQUE (text, intent)
    );
    """,
    # 7: processed_updates (step 1), unused since update ids live in tg_inbox (step 4): dropped
    """
    DROP TABLE IF EXISTS processed_updates;
    """,
]

OWNER = "conversations"
#: what ``Database.migrate(OWNER, ...)`` takes: each engine's list
BY_DIALECT: dict[str, list[str]] = {"sqlite": MIGRATIONS, "postgresql": POSTGRES_MIGRATIONS}
