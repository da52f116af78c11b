"""The agents feature's tables: its migrations, in order (append only, never edit one).

Run by ``Database.migrate("agents", BY_DIALECT)`` when ``open_runtime`` binds the feature. The
first one is what the conversation store's step 3 created before the tables moved here; on
such a database it finds them in place (``IF NOT EXISTS``).
"""

from __future__ import annotations

OWNER = "agents"

MIGRATIONS: list[str] = [
    # 1: a forum topic per conversation (with the mirror's cursors), relayed agent messages,
    # topics waiting to be deleted on Telegram, the desk's own settings
    """
    CREATE TABLE IF NOT EXISTS agent_topics (
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
    CREATE INDEX IF NOT EXISTS agent_topics_by_thread ON agent_topics (thread_id);
    CREATE TABLE IF NOT EXISTS agent_relays (
        agent_message_id INTEGER PRIMARY KEY,
        conversation_id  TEXT NOT NULL,
        user_message_id  INTEGER NOT NULL,
        caption          INTEGER NOT NULL DEFAULT 0,
        ts               REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS agent_relays_by_conversation ON agent_relays (conversation_id);
    CREATE TABLE IF NOT EXISTS agent_trash (
        thread_id INTEGER PRIMARY KEY,
        ts        REAL NOT NULL
    );
    CREATE TABLE IF NOT EXISTS agent_meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 2: every message the desk posts that carries a user's data outside the user's own topic
    # (Escalations and Live-feed lines, /find results, transcripts and answers sent to agents,
    # confirmations), with the conversations it is about: /forget and the retention purge
    # delete it on Telegram or edit that conversation's part out of it. ``private_chat`` is the
    # agent's chat for a message sent privately (NULL: the agents' group). ``parts`` hold, per
    # conversation, its piece of an editable shared message (NULL conversation: a heading).
    """
    CREATE TABLE IF NOT EXISTS agent_posts (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        private_chat INTEGER,
        thread_id    INTEGER,
        message_id   INTEGER NOT NULL,
        kind         TEXT NOT NULL,
        editable     INTEGER NOT NULL DEFAULT 0,
        cleanup      INTEGER NOT NULL DEFAULT 0,
        ts           REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS agent_posts_cleanup ON agent_posts (cleanup) WHERE cleanup > 0;
    CREATE INDEX IF NOT EXISTS agent_posts_by_ts ON agent_posts (ts);
    CREATE TABLE IF NOT EXISTS agent_post_parts (
        post_id         INTEGER NOT NULL REFERENCES agent_posts (id) ON DELETE CASCADE,
        seq             INTEGER NOT NULL,
        conversation_id TEXT,
        html            TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (post_id, seq)
    );
    CREATE INDEX IF NOT EXISTS agent_post_parts_by_conversation ON agent_post_parts (conversation_id);
    """,
    # 3: the escalation queue (bot/agents/desk/queue.py): one item per escalation of a
    # conversation, open -> claimed -> resolved; erased with the conversation (its
    # conversation_id), the anonymous counters keep the figures
    """
    CREATE TABLE IF NOT EXISTS agent_queue (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id TEXT NOT NULL,
        kind            TEXT NOT NULL,
        status          TEXT NOT NULL DEFAULT 'open',
        agent           TEXT NOT NULL DEFAULT '',
        message_id      INTEGER,
        opened_at       REAL NOT NULL,
        claimed_at      REAL,
        resolved_at     REAL,
        alerted_at      REAL
    );
    CREATE INDEX IF NOT EXISTS agent_queue_by_status ON agent_queue (status, opened_at);
    CREATE INDEX IF NOT EXISTS agent_queue_by_conversation ON agent_queue (conversation_id);
    CREATE INDEX IF NOT EXISTS agent_queue_by_message ON agent_queue (message_id);
    """,
    # 4: who owns a case (an agent claimed it: a button, the first confirmed reply, /assign),
    # and users' media waiting to be copied into their topic (copyMessage from their chat)
    """
    ALTER TABLE agent_topics ADD COLUMN owner_id INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE agent_topics ADD COLUMN owner_name TEXT NOT NULL DEFAULT '';
    CREATE TABLE IF NOT EXISTS agent_media (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id TEXT NOT NULL,
        chat_id         INTEGER NOT NULL,
        message_id      INTEGER NOT NULL,
        kind            TEXT NOT NULL,
        ts              REAL NOT NULL,
        UNIQUE (chat_id, message_id)
    );
    CREATE INDEX IF NOT EXISTS agent_media_by_conversation ON agent_media (conversation_id);
    """,
]

#: The same steps on PostgreSQL, numbered alike (append to both lists): step N makes the same
#: tables. Timestamps are DOUBLE PRECISION (REAL is 4 bytes there), ids and Telegram's chat /
#: message ids BIGINT, AUTOINCREMENT an identity column.
POSTGRES_MIGRATIONS: list[str] = [
    # 1: topics, relays, trash, meta
    """
    CREATE TABLE IF NOT EXISTS agent_topics (
        ref             BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        conversation_id TEXT NOT NULL UNIQUE,
        thread_id       BIGINT,
        topic_name      TEXT NOT NULL DEFAULT '',
        card_message_id BIGINT,
        card_pinned     INTEGER NOT NULL DEFAULT 0,
        card_html       TEXT NOT NULL DEFAULT '',
        topic_cursor    BIGINT NOT NULL DEFAULT 0,
        seen_cursor     BIGINT NOT NULL DEFAULT 0,
        symptom         TEXT NOT NULL DEFAULT '',
        flags           TEXT NOT NULL DEFAULT '',
        paused_until    DOUBLE PRECISION,
        paused_by       TEXT NOT NULL DEFAULT '',
        quote_state     TEXT NOT NULL DEFAULT '',
        created_at      DOUBLE PRECISION NOT NULL,
        updated_at      DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX IF NOT EXISTS agent_topics_by_thread ON agent_topics (thread_id);
    CREATE TABLE IF NOT EXISTS agent_relays (
        agent_message_id BIGINT PRIMARY KEY,
        conversation_id  TEXT NOT NULL,
        user_message_id  BIGINT NOT NULL,
        caption          INTEGER NOT NULL DEFAULT 0,
        ts               DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX IF NOT EXISTS agent_relays_by_conversation ON agent_relays (conversation_id);
    CREATE TABLE IF NOT EXISTS agent_trash (
        thread_id BIGINT PRIMARY KEY,
        ts        DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE IF NOT EXISTS agent_meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 2: posts carrying a user's data, with their parts
    """
    CREATE TABLE IF NOT EXISTS agent_posts (
        id           BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        private_chat BIGINT,
        thread_id    BIGINT,
        message_id   BIGINT NOT NULL,
        kind         TEXT NOT NULL,
        editable     INTEGER NOT NULL DEFAULT 0,
        cleanup      INTEGER NOT NULL DEFAULT 0,
        ts           DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX IF NOT EXISTS agent_posts_cleanup ON agent_posts (cleanup) WHERE cleanup > 0;
    CREATE INDEX IF NOT EXISTS agent_posts_by_ts ON agent_posts (ts);
    CREATE TABLE IF NOT EXISTS agent_post_parts (
        post_id         BIGINT NOT NULL REFERENCES agent_posts (id) ON DELETE CASCADE,
        seq             INTEGER NOT NULL,
        conversation_id TEXT,
        html            TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (post_id, seq)
    );
    CREATE INDEX IF NOT EXISTS agent_post_parts_by_conversation ON agent_post_parts (conversation_id);
    """,
    # 3: the escalation queue
    """
    CREATE TABLE IF NOT EXISTS agent_queue (
        id              BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        conversation_id TEXT NOT NULL,
        kind            TEXT NOT NULL,
        status          TEXT NOT NULL DEFAULT 'open',
        agent           TEXT NOT NULL DEFAULT '',
        message_id      BIGINT,
        opened_at       DOUBLE PRECISION NOT NULL,
        claimed_at      DOUBLE PRECISION,
        resolved_at     DOUBLE PRECISION,
        alerted_at      DOUBLE PRECISION
    );
    CREATE INDEX IF NOT EXISTS agent_queue_by_status ON agent_queue (status, opened_at);
    CREATE INDEX IF NOT EXISTS agent_queue_by_conversation ON agent_queue (conversation_id);
    CREATE INDEX IF NOT EXISTS agent_queue_by_message ON agent_queue (message_id);
    """,
    # 4: the case's owner, users' media waiting to be copied
    """
    ALTER TABLE agent_topics ADD COLUMN IF NOT EXISTS owner_id BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE agent_topics ADD COLUMN IF NOT EXISTS owner_name TEXT NOT NULL DEFAULT '';
    CREATE TABLE IF NOT EXISTS agent_media (
        id              BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        conversation_id TEXT NOT NULL,
        chat_id         BIGINT NOT NULL,
        message_id      BIGINT NOT NULL,
        kind            TEXT NOT NULL,
        ts              DOUBLE PRECISION NOT NULL,
        UNIQUE (chat_id, message_id)
    );
    CREATE INDEX IF NOT EXISTS agent_media_by_conversation ON agent_media (conversation_id);
    """,
]

#: what ``Database.migrate(OWNER, ...)`` takes: each engine's list
BY_DIALECT: dict[str, list[str]] = {"sqlite": MIGRATIONS, "postgresql": POSTGRES_MIGRATIONS}
