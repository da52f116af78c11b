"""Benchmark of the whole Telegram door: fake Bot API over HTTP, real PTB, engine, SQLite.

``python -m bot bench --telegram`` calls ``bench_telegram(settings)``. The bot runs in this
process exactly as ``python -m bot run`` does (PTB long polling, the door, the engine, a
temporary SQLite file). Telegram's side — the fake Bot API (``bot.testing.fakeapi``) and 200
simulated users — runs in a child process, as Telegram's servers would not share the
bot's CPU. The users type messages, press buttons and restart; each waits until the bot
has finished its previous turn (the door reports finished updates over a pipe) before the
next. Telegram's own quotas are lifted: it caps a bot at ~30 messages/s overall, and the
point is the door's headroom above that.

After a warm-up (every user sends /start), two phases:

* capacity — every user sends the next message as soon as the previous one is handled
  (200 in flight all the time): the most updates/s the door sustains (logged);
* paced — each user writes once every ``users / rate`` seconds (random phase), offering
  ``rate`` updates/s (default 250, above the 200/s target): we report the updates/s handled
  and the p99 latency from "update served" (the fake answered ``getUpdates`` with it) to
  "reply received" (the first ``sendMessage`` for that chat reached the fake).

Returns ``{"telegram_updates_per_s": ..., "telegram_p99_ms": ...}`` from the paced phase;
the capacity figure and the call mix go to the log. ``cpu_ms_per_update``: the bot process's
CPU time (every thread) from "go" to the end over the updates handled — steadier than the
rates when the machine is shared, so changes to the door are compared by it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import multiprocessing
import random
import resource
import statistics
import struct
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.testing.phrases import ANY_MESSAGE

log = logging.getLogger(__name__)

_DONE = struct.Struct("<q")


def _cpu() -> float:
    """CPU seconds this process (every thread) has used so far."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered))) - 1))]


# -- Telegram's side (child process) ------------------------------------------------------------
class _Users:
    """Simulated users driving the fake server; latency bookkeeping."""

    def __init__(self, fake: Any, users: int, seed: int) -> None:
        self.fake = fake
        self.rng = random.Random(seed)
        self.chats = [700_000 + i for i in range(users)]
        self.done: dict[int, asyncio.Future[None]] = {}
        self.waiting_reply: dict[int, int] = {}  # chat -> update id awaiting its first reply
        self.latencies: list[float] = []
        self.measuring = False
        self.handled = 0
        fake.on_call.append(self._on_call)

    def _on_call(self, call: Any) -> None:
        if call.method != "sendMessage":
            return
        uid = self.waiting_reply.pop(call.params.get("chat_id"), None)
        if uid is not None and self.measuring:
            served = self.fake.served_at.get(uid)
            if served is not None:
                self.latencies.append((call.received_at - served) * 1000.0)

    def finished(self, update_id: int) -> None:
        self.handled += 1
        fut = self.done.pop(update_id, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def act(self, chat: int, step: int) -> None:
        """One user action; returns when the bot has fully handled it."""
        kind = step % 6
        try:
            if kind == 5:
                update = self.fake.command(chat, "restart")
            elif kind in (1, 3):
                msg = self.fake.last_keyboard(chat)
                update = self.fake.press(chat, message_id=msg.message_id, index=self.rng.randrange(len(msg.buttons)))
            else:
                update = self.fake.send_text(chat, self.rng.choice(ANY_MESSAGE))
        except LookupError:  # no keyboard on show right now: type instead
            update = self.fake.send_text(chat, self.rng.choice(ANY_MESSAGE))
        uid = update["update_id"]
        fut = asyncio.get_running_loop().create_future()
        self.done[uid] = fut
        self.waiting_reply[chat] = uid
        await asyncio.wait_for(fut, 60)


async def _telegram_side(
    conn: Connection,
    users: int,
    rate: float,
    paced_seconds: float,
    capacity_rounds: int,
    seed: int,
    real_limits: bool = False,
) -> dict[str, Any]:
    from bot.testing.fakeapi import SEND_METHODS, FakeBotAPI, RateLimitPolicy, TotalRateLimit, is_group_chat

    loop = asyncio.get_running_loop()
    async with FakeBotAPI() as fake:
        if real_limits:  # Telegram's quotas, enforced with 429s as Telegram does
            fake.policies.append(TotalRateLimit(30, 1.0))
            fake.policies.append(RateLimitPolicy(3, 2.0, chats=lambda c: not is_group_chat(c)))
            fake.policies.append(RateLimitPolicy(20, 60.0, chats=is_group_chat))
        sim = _Users(fake, users, seed)
        control: asyncio.Queue[bytes] = asyncio.Queue()

        def readable() -> None:
            while conn.poll():
                try:
                    data = conn.recv_bytes()
                except EOFError:  # the bot's process has ended and closed its end of the pipe
                    loop.remove_reader(conn.fileno())
                    return
                if len(data) == _DONE.size:
                    sim.finished(_DONE.unpack(data)[0])
                else:
                    control.put_nowait(data)

        loop.add_reader(conn.fileno(), readable)
        conn.send(("ready", fake.token, fake.base_url, fake.base_file_url))
        await control.get()  # b"go": the bot is polling
        try:
            await asyncio.gather(*(sim.act(c, 0) for c in sim.chats))  # warm-up: /start

            sim.measuring = True
            start_handled, t0 = sim.handled, time.perf_counter()

            async def closed(chat: int) -> None:
                for step in range(1, capacity_rounds + 1):
                    await sim.act(chat, step)

            await asyncio.gather(*(closed(c) for c in sim.chats))
            capacity = (sim.handled - start_handled) / max(1e-9, time.perf_counter() - t0)
            cap_p99 = _pct(sim.latencies, 0.99)

            interval = users / rate
            sim.latencies = []
            start_handled, t0 = sim.handled, time.perf_counter()
            end = t0 + paced_seconds

            async def paced(chat: int) -> None:
                step = capacity_rounds + 1
                nxt = t0 + sim.rng.random() * interval
                while nxt < end:
                    delay = nxt - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await sim.act(chat, step)
                    step += 1
                    nxt += interval

            paced_from = len(fake.calls)
            await asyncio.gather(*(paced(c) for c in sim.chats))
            elapsed = time.perf_counter() - t0
            lat = sim.latencies
            paced_updates = sim.handled - start_handled
            throttled = sum(1 for c in fake.calls[paced_from:] if c.method in SEND_METHODS and c.status == 200)
            refused = sum(1 for c in fake.calls[paced_from:] if c.status == 429)
            result = {
                "updates_per_s": (sim.handled - start_handled) / elapsed,
                "updates": sim.handled - start_handled,
                "p50_ms": statistics.median(lat) if lat else 0.0,
                "p99_ms": _pct(lat, 0.99),
                "max_ms": max(lat, default=0.0),
                "capacity_per_s": capacity,
                "calls_per_turn": throttled / max(1, paced_updates),
                "refused_429": refused,
                "capacity_p99_ms": cap_p99,
                "handled_total": sim.handled,
                "calls": collections.Counter(c.method for c in fake.calls).most_common(),
            }
            conn.send(("result", result))
            await control.get()  # b"stop": the bot has stopped; now the fake may go away
            return result
        finally:
            loop.remove_reader(conn.fileno())


# -- the yardstick: a bare python-telegram-bot echo bot -------------------------------------------
async def _bare_bot(token: str, base_url: str, base_file_url: str, done: Any) -> Any:
    """PTB as its documentation shows it: long polling, one handler echoing text and answering
    presses, no database. Returns the running Application. Its httpx transport gets the
    door's ``sniffio`` fix: without the package (anyio >= 4.16 no longer brings it) httpcore
    searched sys.path on every request, ~13% of the yardstick's CPU — a cost of this
    environment, not of PTB, which would flatter the door."""
    from telegram import Update
    from telegram.ext import ApplicationBuilder, CallbackQueryHandler, ContextTypes, MessageHandler, filters
    from telegram.request import HTTPXRequest

    from bot.tg.service import skip_missing_sniffio

    skip_missing_sniffio()

    app = (
        ApplicationBuilder()
        .token(token)
        .base_url(base_url)
        .base_file_url(base_file_url)
        .request(HTTPXRequest(connection_pool_size=32, httpx_kwargs={"trust_env": False}))
        .get_updates_request(HTTPXRequest(httpx_kwargs={"trust_env": False}))
        .build()
    )

    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if update.effective_message is not None:
            await update.effective_message.reply_text(update.effective_message.text or "?")
        done(update.update_id)

    async def press(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.callback_query is not None
        await update.callback_query.answer()
        done(update.update_id)

    app.add_handler(MessageHandler(filters.ALL, echo))
    app.add_handler(CallbackQueryHandler(press))
    await app.initialize()
    assert app.updater is not None
    await app.updater.start_polling(poll_interval=0.0, timeout=10)
    await app.start()
    return app


def _telegram_process(conn: Connection, *args: Any) -> None:
    logging.basicConfig(level=logging.WARNING)
    try:
        asyncio.run(_telegram_side(conn, *args))
    except BaseException as exc:  # report instead of dying silently
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


# -- the bot's side (this process) ---------------------------------------------------------
async def run_telegram(
    settings: Settings,
    *,
    users: int = 200,
    rate: float = 250.0,
    paced_seconds: float = 6.0,
    capacity_rounds: int = 6,
    seed: int = 7,
    max_parallel: int = 16,
    real_limits: bool = False,
    bare: bool = False,
) -> dict[str, Any]:
    """One run against a fresh fake: the door (default) or ``bare`` — a bare PTB echo bot.
    ``real_limits``: the shipped rate limits on our side and Telegram's enforced by the fake."""
    from bot.features import standard_features
    from bot.runtime import open_runtime
    from bot.tg.ratelimit import RateLimits
    from bot.tg.service import TelegramService

    for name in ("telegram", "httpx", "httpcore", "bot.tg"):
        logging.getLogger(name).setLevel(logging.WARNING)
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(
        target=_telegram_process,
        name="fake-telegram",
        daemon=True,
        args=(theirs, users, rate, paced_seconds, capacity_rounds, seed, real_limits),
    )
    proc.start()
    theirs.close()
    try:
        msg = await asyncio.to_thread(ours.recv)
        if msg[0] != "ready":
            raise RuntimeError(f"the fake Bot API did not start: {msg}")
        _, token, base_url, base_file_url = msg
        if bare:
            app = await _bare_bot(token, base_url, base_file_url, lambda uid: ours.send_bytes(_DONE.pack(uid)))
            try:
                cpu0 = _cpu()
                ours.send_bytes(b"go")
                kind, result = await asyncio.to_thread(ours.recv)
                cpu = _cpu() - cpu0
            finally:
                assert app.updater is not None
                await app.updater.stop()
                await app.stop()
                await app.shutdown()
                with contextlib.suppress(OSError):
                    ours.send_bytes(b"stop")
        else:
            with tempfile.TemporaryDirectory(prefix="bot-bench-tg-") as tmp:
                db = str(Path(tmp) / "bench.db")
                # as ``python -m bot run`` without an agents' group or a worker: the door's own figure
                features = standard_features(settings, desk=False, deliver=False)
                runtime = await open_runtime(db, settings.content_dir, settings.flows_dir, settings.lang,
                                             features=features.all, settings=settings)
                try:
                    tg_settings = Settings(
                        db_path=db,
                        content_dir=settings.content_dir,
                        flows_dir=settings.flows_dir,
                        lang=settings.lang,
                        telegram_token=token,
                        telegram_base_url=base_url,
                        telegram_base_file_url=base_file_url,
                    )
                    async with TelegramService(
                        tg_settings,
                        runtime,
                        limits=RateLimits() if real_limits else RateLimits.unlimited(),
                        poll_timeout=10,
                        trust_env=False,
                        max_parallel=max_parallel,
                    ) as service:
                        service.door.listeners.append(lambda uid, chat: ours.send_bytes(_DONE.pack(uid)))
                        cpu0 = _cpu()
                        ours.send_bytes(b"go")
                        kind, result = await asyncio.to_thread(ours.recv)
                        cpu = _cpu() - cpu0
                    with contextlib.suppress(OSError):
                        ours.send_bytes(b"stop")
                finally:
                    await runtime.close()
        if kind != "result":
            raise RuntimeError(f"telegram bench failed on the fake's side: {result}")
        result["cpu_ms_per_update"] = cpu * 1000.0 / max(1, result["handled_total"])
    finally:
        ours.close()
        await asyncio.to_thread(proc.join, 10)
        if proc.is_alive():  # pragma: no cover - only if the child hangs
            proc.kill()
    log.warning(
        "telegram bench (%s%s): %d users; capacity %.0f updates/s (p99 %.0f ms with all %d in flight); "
        "paced, %.0f offered: %.1f updates/s, p50 %.1f ms, p99 %.1f ms, max %.1f ms over %d "
        "updates; %.2f ms of the bot's CPU per update; %.2f throttled calls per update, %d answered 429; "
        "Bot API calls: %s",
        "bare PTB echo bot" if bare else "the door",
        ", real limits" if real_limits else "",
        users,
        result["capacity_per_s"],
        result["capacity_p99_ms"],
        users,
        rate,
        result["updates_per_s"],
        result["p50_ms"],
        result["p99_ms"],
        result["max_ms"],
        result["updates"],
        result["cpu_ms_per_update"],
        result["calls_per_turn"],
        result["refused_429"],
        ", ".join(f"{m} {n}" for m, n in result["calls"]),
    )
    return result


async def bench_telegram(settings: Settings, **kw: Any) -> dict[str, float]:
    """The door, then a bare PTB echo bot against the same kind of fake (the yardstick)."""
    door = await run_telegram(settings, **kw)
    bare = await run_telegram(settings, bare=True, **kw)
    return {
        "telegram_updates_per_s": round(door["updates_per_s"], 1),
        "telegram_p99_ms": round(door["p99_ms"], 1),
        "telegram_capacity_per_s": round(door["capacity_per_s"], 1),
        "telegram_bare_capacity_per_s": round(bare["capacity_per_s"], 1),
        "telegram_vs_bare": round(door["capacity_per_s"] / max(1e-9, bare["capacity_per_s"]), 2),
        "telegram_cpu_ms_per_update": round(door["cpu_ms_per_update"], 2),
        "telegram_bare_cpu_ms_per_update": round(bare["cpu_ms_per_update"], 2),
    }


async def bench_telegram_real_limits(settings: Settings, *, rate: float = 20.0, seconds: float = 30.0) -> dict[str, float]:
    """200 users offering ``rate`` messages/s for ``seconds`` with the shipped limits, the fake
    enforcing Telegram's (30/s overall, ~1/s per chat, 20/min per group)."""
    r = await run_telegram(settings, rate=rate, paced_seconds=seconds, capacity_rounds=0, real_limits=True)
    return {
        "telegram_real_limits_p99_ms": round(r["p99_ms"], 1),
        "telegram_real_limits_p50_ms": round(r["p50_ms"], 1),
        "telegram_real_limits_updates_per_s": round(r["updates_per_s"], 1),
        "telegram_calls_per_turn": round(r["calls_per_turn"], 2),
        "telegram_real_limits_429": r["refused_429"],
    }
