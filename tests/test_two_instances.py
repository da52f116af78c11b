"""Two instances of the real bot (``python -m bot run --webhook``) on one PostgreSQL database
behind a round-robin proxy, 200 users (some sending a quote request), one instance killed with
SIGKILL mid-load: every update answered once, every quote mailed once, no conversation's
steps out of order (``bot/testing/two_instances.py``). About a minute and a half on a quiet
2-core machine; marked ``two_instances`` (``pytest -m two_instances`` runs it alone)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.testing.two_instances import two_instance_run
from tests.support.postgres import PostgresServer

QUOTE_USERS = 8


@pytest.mark.two_instances
async def test_two_instances_one_killed_nothing_lost_or_doubled(pg_server: PostgresServer, tmp_path: Path) -> None:
    dsn = pg_server.create_database("two")
    r = await two_instance_run(dsn=dsn, workdir=tmp_path, users=200, messages=2, quote_users=QUOTE_USERS,
                               kill_at=0.4, seed=13, answer_timeout=20)
    assert r["killed"] == 1 and not r["form_errors"], r
    assert sorted(r["exit_codes"]) == [-9, 0], r  # the survivor stopped cleanly
    # every update handled once, in order
    assert r["messages"] == 400 and r["lost_turns"] == 0 and r["turns_twice"] == 0, r
    assert r["out_of_order"] == 0 and r["updates_answered_twice"] == 0, r
    # every answer sent once; a reply marked "sending" when its instance died is not sent again (the
    # Bot API has no idempotency key): on PostgreSQL its mark and its request are one event-loop
    # turn apart (docs/telegram.md, "Never twice"), so a kill in that turn may lose it — logged unsure
    assert r["replies_twice"] == 0 and r["lost_replies"] <= r["unsure"], r
    assert r["timeouts"] <= r["unsure"], r  # only a user whose answer was lost that way waited in vain
    # every quote confirmed once and mailed once
    assert r["quotes_sent"] == QUOTE_USERS and r["quotes_confirmed_twice"] == 0, r
    assert r["mails"] == QUOTE_USERS and r["mailed_refs"] == QUOTE_USERS and r["mails_twice"] == 0, r
    assert r["passed_on"] > 0  # the proxy did pass requests from the dead instance to the live one
