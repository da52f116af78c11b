"""``python -m bot bench --agents``: does mirroring slow the users down, and does the mirror
keep up with Telegram's 20 messages/minute per group?

Two runs of the same load on fresh databases — mirroring off, then on — with 200 users
talking at once. Each user follows a conversation of ``turns`` messages (a complaint, then
button presses and the odd typed answer, sometimes "talk to a person"), pausing a human
"think time" between turns (``think`` seconds: reading a step and trying it on the phone).

With mirroring on, the real desk posts through python-telegram-bot (``PTBGateway``) to the
fake Bot API over HTTP, which refuses (429) more than 20 calls per "minute" into the group.
Time is compressed ``scale`` times for the group's minute, the think times and the desk's
clock alike, so a 6-minute rush runs in ~20 s; the catch-up time is reported in Telegram
time (seconds of the real 20/min limit). The users' latency is measured in real time: the
turn as the engine serves it (``Engine.handle``, in which the mirror's listener runs; the
same event loop and SQLite connection the mirror works on).

In the mix, as a team would see it: some users send a photo (the desk copies it into their
topic with ``copyMessage`` — the fake knows those messages), and agents write internal notes
(``// …``) in the topics of users who asked for a person once the topic is there.
(``open_cases``: agents also ``/open_N`` every such case at once — opened topics go first, ahead
of the Live feed, so the catch-up then measures the opening, not the mirror: off by default.)

Result: ``mirror_latency_ratio`` = p99 with mirror / p99 without (target <= 1.2) and
``mirror_catchup_s`` = Telegram seconds from the last user message until every line is
visible in the group (target <= 60), plus the evidence (calls, refusals, busiest minute).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import random
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.testing.phrases import COMPLAINTS, TYPED

NOTES = (
    "on it, checking her storage plan",
    "@Tom can you take this one after lunch?",
    "same person as yesterday, be patient",
    "waiting for the screenshot",
)

log = logging.getLogger(__name__)

GROUP = -1001000000001
USER_CHAT0 = 10_000
AGENT = 777


MEDIA_PER_USER = 3  # photos each user may send (message ids 1..3 in their chat, known to the fake)


def _fake_process(conn: Connection, scale: float, users: int = 0) -> None:
    """Telegram's side in its own process (its CPU is not the bot's): the fake Bot API with a
    forum group and the 20-per-minute refusal policy (the minute shortened by ``scale``)."""
    logging.basicConfig(level=logging.WARNING)
    try:
        asyncio.run(_fake_main(conn, scale, users))
    except BaseException as exc:  # report instead of dying silently
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


async def _fake_main(conn: Connection, scale: float, users: int = 0) -> None:
    from bot.testing.fakeapi import FakeBotAPI, RateLimitPolicy, SentMessage, is_group_chat

    fake = FakeBotAPI()
    await fake.start()
    fake.make_forum(GROUP)
    for i in range(users):  # the photos users will send (copyMessage copies them into topics)
        chat = USER_CHAT0 + i
        for mid in range(1, MEDIA_PER_USER + 1):
            fake.messages.setdefault(chat, {})[mid] = SentMessage(
                chat, mid, "", "", [], None, 0, from_bot=False, kind="photo"
            )
    policy = RateLimitPolicy(20, 60.0 / scale, chats=is_group_chat)
    fake.policies.append(policy)
    conn.send(("ready", fake.port, fake.token))
    try:
        await asyncio.to_thread(conn.recv)  # "stop"
        calls = [(c.method, c.received_at, c.status) for c in fake.calls if c.params.get("chat_id") == GROUP]
        conn.send(("done", calls, policy.refused))
    finally:
        await fake.stop()


def _p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))] if ordered else 0.0


@dataclass
class RunResult:
    latencies_ms: list[float] = field(default_factory=list)
    turns: int = 0
    load_seconds: float = 0.0  # Telegram time
    catchup_s: float = 0.0
    group_calls: int = 0
    refused: int = 0
    busiest_minute: int = 0
    lines_posted: int = 0
    escalations: int = 0
    media: int = 0  # photos users sent
    copies: int = 0  # copyMessage calls into the group
    notes: int = 0  # agents' internal notes
    backlog_after: dict[str, int] = field(default_factory=dict)
    retry_afters: int = 0


async def _run(
    knowledge: Any,
    *,
    mirror: bool,
    users: int,
    turns: int,
    scale: float,
    think: tuple[float, float],
    seed: int,
    catchup: bool = True,
    open_cases: bool = False,
) -> RunResult:
    from bot.agents.desk import AgentCommand, AgentMessage, DeskOptions, UserMedia
    from bot.agents.feature import Agents
    from bot.agents.limiter import GroupLimiter
    from bot.agents.ports import ScaledClock
    from bot.core.messages import Attachment, EventKind, Inbound, Reply
    from bot.escalation.service import Escalation
    from bot.runtime import Ports, open_runtime

    result = RunResult()
    clock = ScaledClock(scale)
    with tempfile.TemporaryDirectory(prefix="bot-bench-agents-") as tmp:
        settings = Settings(agent_chat_id=GROUP)
        quotes = Escalation(settings, deliver=False)
        agents = Agents(
            settings,
            desk=mirror,
            options=DeskOptions(),
            clock=clock,
            limiter=GroupLimiter(20, 60.0, clock=clock),
            quotes=quotes,
        )
        runtime = await open_runtime(
            Path(tmp) / "bench.db",
            settings.content_dir,
            settings.flows_dir,
            features=[quotes, agents],
            knowledge=knowledge,
        )
        engine, store = runtime.engine, runtime.store
        bot = desk = conn = proc = None
        try:
            if mirror:
                from telegram import Bot
                from telegram.request import HTTPXRequest

                from bot.tg.agents_gateway import PTBGateway

                ctx = multiprocessing.get_context("spawn")
                conn, theirs = ctx.Pipe()
                proc = ctx.Process(
                    target=_fake_process, args=(theirs, scale, users), name="fake-telegram", daemon=True
                )
                proc.start()
                theirs.close()
                msg = await asyncio.to_thread(conn.recv)
                if msg[0] != "ready":
                    raise RuntimeError(f"the fake Bot API did not start: {msg}")
                _, port, token = msg
                base = f"http://127.0.0.1:{port}"
                bot = Bot(
                    token,
                    base_url=f"{base}/bot",
                    base_file_url=f"{base}/file/bot",
                    request=HTTPXRequest(connection_pool_size=8, httpx_kwargs={"trust_env": False}),
                )
                await bot.initialize()
                await runtime.start(Ports(agents_group=PTBGateway(bot, GROUP)))
                desk = agents.desk

            async def user(i: int) -> float:
                rng = random.Random(seed * 100_003 + i)
                chat = USER_CHAT0 + i
                cid = f"tg:{chat}"
                await clock.sleep(rng.uniform(0, think[1]))
                last: tuple[Reply, ...] = ()
                ended = clock.now()
                photos = 0
                asked = opened = False
                for n in range(turns):
                    buttons = [b for r in last for b in r.buttons]
                    media: UserMedia | None = None
                    note: AgentMessage | AgentCommand | None = None
                    t = desk.topic_of(cid) if asked and desk is not None else None
                    if t is not None and t.thread_id is None and not opened and open_cases:  # an agent opens it
                        note = AgentCommand(GROUP, None, 1_000_000 + i * 100 + n, AGENT, "Maria", f"open_{t.ref}", "")
                        opened = True
                    elif t is not None and t.thread_id is not None:  # and notes something on it
                        text = f"// {rng.choice(NOTES)}"
                        note = AgentMessage(GROUP, t.thread_id, 1_000_000 + i * 100 + n, AGENT, "Maria", text, text)
                        asked = False
                    if n > 0 and photos < MEDIA_PER_USER and rng.random() < 0.1:
                        photos += 1
                        caption = rng.choice(("", "", "this is what it says", "screenshot of the error"))
                        photo = Attachment("photo", f"p{i}.{photos}", 90_000)
                        inbound = Inbound(cid, EventKind.MEDIA, text=caption, attachments=(photo,))
                        media = UserMedia(cid, chat, photos, "photo", time.time())
                        result.media += 1
                    elif n == 0:
                        inbound = Inbound(cid, EventKind.TEXT, text=rng.choice(COMPLAINTS), user_name=f"User{i}")
                    elif n == turns // 2 and rng.random() < 0.08:
                        inbound = Inbound(cid, EventKind.TEXT, text="I want to talk to a person")
                        asked = True
                    elif buttons and rng.random() < 0.85:
                        # people follow the steps: "didn't work" / "worked" / the first option;
                        # "talk to a person" is the path above, not a random tap
                        usable = [b for b in buttons if not b.id.endswith((":person", ":human_agent"))]
                        no = [b for b in usable if b.id.endswith(":no")]
                        pick = no[0] if no and rng.random() < 0.6 else rng.choice(usable or buttons)
                        inbound = Inbound(cid, EventKind.BUTTON, payload=pick.id)
                    else:
                        inbound = Inbound(cid, EventKind.TEXT, text=rng.choice(TYPED))
                    t0 = time.perf_counter()
                    if desk is not None and media is not None:
                        desk.submit(media)  # what the Telegram handler does before the door's turn
                    if desk is not None and note is not None:
                        desk.submit(note)
                        result.notes += isinstance(note, AgentMessage)
                    last = await engine.handle(inbound)
                    result.latencies_ms.append((time.perf_counter() - t0) * 1000)
                    ended = clock.now()
                    if n < turns - 1:
                        await clock.sleep(rng.uniform(*think))
                return ended

            start = clock.now()
            ends = await asyncio.gather(*(user(i) for i in range(users)))
            load_end = max(ends)
            result.turns = len(result.latencies_ms)
            result.load_seconds = load_end - start
            if desk is not None and conn is not None:
                if catchup:
                    try:
                        await desk.settle(timeout=600.0 / scale * 10)
                        result.catchup_s = max(0.0, clock.now() - load_end)
                    except TimeoutError:
                        result.catchup_s = float("inf")
                result.backlog_after = desk.backlog()
                result.lines_posted = desk.posted_lines
                result.retry_afters = desk.limiter.retry_afters
                await runtime.stop()
                conn.send("stop")
                msg = await asyncio.to_thread(conn.recv)
                if msg[0] != "done":
                    raise RuntimeError(f"the fake Bot API failed: {msg}")
                _, calls, refused = msg
                result.group_calls = len(calls)
                result.copies = sum(1 for method, _, status in calls if method == "copyMessage" and status == 200)
                result.refused = refused
                window = 60.0 / scale
                times = sorted(t for _, t, _ in calls)
                j = 0
                for k, t in enumerate(times):
                    while times[j] <= t - window:
                        j += 1
                    result.busiest_minute = max(result.busiest_minute, k - j + 1)
                async with store.db.execute(
                    "SELECT kind, COUNT(*) FROM messages WHERE kind LIKE 'escalation:%' GROUP BY kind"
                ) as cur:
                    kinds = {str(k): int(n) for k, n in await cur.fetchall()}
                result.escalations = sum(kinds.values())
                log.info("agents bench: escalations %s", kinds)
        finally:
            await runtime.stop()
            if bot is not None:
                await bot.shutdown()
            if proc is not None:
                proc.join(timeout=5)
                if proc.is_alive():
                    proc.kill()
            await runtime.close()
    return result


async def bench_agents(
    settings: Settings,
    *,
    users: int = 200,
    rounds: int = 4,
    seed: int = 3,
    latency_turns: int = 12,
    latency_think: tuple[float, float] = (0.5, 1.5),
    rush_turns: int = 8,
    rush_think: tuple[float, float] = (20.0, 60.0),
    scale: float = 40.0,
) -> dict[str, Any]:
    """Two measurements (see the module docstring):

    * latency — real time, 200 users writing every 0.5-1.5 s (far busier than people),
      mirroring off and on, ``rounds`` times each, alternating; p99 over each side's turns;
    * rush — 200 people at human pace (a turn every 20-60 s), time compressed ``scale``
      times, mirroring on: how long after the last message until the group shows every line,
      and whether the group's limit held (the fake Bot API counts and refuses).

    Time compression is not used for the latency figure: it would make the mirror do
    ``scale`` times Telegram's 20 calls a minute and overstate its cost as much.
    """
    from bot.features import standard_features
    from bot.runtime import check

    knowledge, problems = check(settings.content_dir, settings.flows_dir, settings.lang, standard_features().all)
    if knowledge is None or problems:
        raise SystemExit(f"content has problems; run `python -m bot check` ({len(problems)} found)")
    for name in ("bot.agents", "bot.store", "telegram", "httpx", "httpcore"):
        quiet = logging.getLogger(name)
        quiet.setLevel(max(quiet.getEffectiveLevel(), logging.WARNING))
    offs: list[RunResult] = []
    ons: list[RunResult] = []
    for r in range(rounds):
        for mirror, into in ((False, offs), (True, ons)):
            into.append(
                await _run(
                    knowledge,
                    mirror=mirror,
                    users=users,
                    turns=latency_turns,
                    scale=1.0,
                    think=latency_think,
                    seed=seed + r,
                    catchup=False,
                )
            )
    # p99 over all the turns of each side (pooled): steadier than any single run's tail
    p99_off = _p99([v for x in offs for v in x.latencies_ms])
    p99_on = _p99([v for x in ons for v in x.latencies_ms])
    # how much two runs of the *same* side differ (mirroring off, odd vs even rounds): the
    # measurement's own noise, to read the ratio against
    noise = 0.0
    if len(offs) >= 2:
        a = _p99([v for x in offs[0::2] for v in x.latencies_ms])
        b = _p99([v for x in offs[1::2] for v in x.latencies_ms])
        noise = max(a, b) / min(a, b) if min(a, b) else 0.0
    rush = await _run(knowledge, mirror=True, users=users, turns=rush_turns, scale=scale, think=rush_think, seed=seed)
    out: dict[str, Any] = {
        "mirror_latency_ratio": round(p99_on / p99_off, 3) if p99_off else 0.0,
        "mirror_catchup_s": round(rush.catchup_s, 1),
        "mirror_p99_off_ms": round(p99_off, 2),
        "mirror_p99_on_ms": round(p99_on, 2),
        "mirror_latency_noise": round(noise, 3),
        "mirror_users": users,
        "mirror_latency_turns": sum(x.turns for x in offs + ons),
        "mirror_latency_group_calls": sum(x.group_calls for x in ons),
        "mirror_rush_turns": rush.turns,
        "mirror_rush_minutes": round(rush.load_seconds / 60, 1),
        "mirror_rush_group_calls": rush.group_calls,
        "mirror_busiest_minute": max([rush.busiest_minute] + [x.busiest_minute for x in ons]),
        "mirror_429": rush.refused + sum(x.refused for x in ons),
        "mirror_lines_posted": rush.lines_posted,
        "mirror_escalations": rush.escalations,
        "mirror_media_sent": rush.media + sum(x.media for x in ons),
        "mirror_media_copied": rush.copies + sum(x.copies for x in ons),
        "mirror_notes": rush.notes + sum(x.notes for x in ons),
        "mirror_backfill_pending": rush.backlog_after.get("gaps", 0),
        "mirror_time_scale": scale,
    }
    log.info("agents bench: %s", out)
    return out
