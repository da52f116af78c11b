"""Run the built image as deploy/compose.yaml does, against a fake Telegram on this host.

    python deploy/verify_container.py [IMAGE] [--engine docker|podman]   (default: backup-bot, docker)

The container (long polling, ``--network host`` to reach the fake Bot API on 127.0.0.1,
compose's hardening: read-only root, tmpfs /tmp, no capabilities, no-new-privileges) must
answer users, take two ``backup-db /data/backups/`` copies, keep /data owner-only, apply
the documented retention line, stop on SIGTERM with exit 0 within its stop timeout, and
exit 2 naming the setting when SMTP_HOST comes without LAB_EMAIL. Exit 0 when all held.
Removes its container and volume afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bot.config import Settings  # noqa: E402
from bot.testing.fakeapi import FakeBotAPI  # noqa: E402

NAME = "backup-bot-verify"
VOLUME = "backup-bot-verify-data"
STOP_TIMEOUT = 20  # as in the documented docker run and compose.yaml
HARDENING = ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]


async def run(*args: str) -> subprocess.CompletedProcess[str]:
    # in a thread: the fake Bot API shares this event loop and must keep answering
    return await asyncio.to_thread(subprocess.run, args, capture_output=True, text=True)


async def check(engine: str, image: str) -> list[str]:
    problems: list[str] = []

    def expect(what: str, ok: bool, detail: object = "") -> None:
        print(f"{'ok' if ok else 'FAILED'}: {what} {detail}".rstrip())
        if not ok:
            problems.append(what)

    bad = await run(engine, "run", "--rm", "-e", "SMTP_HOST=smtp.example.org", "-e", "TELEGRAM_BOT_TOKEN=1:x",
                    image, "run")
    expect("SMTP_HOST without LAB_EMAIL: exit 2, named", bad.returncode == 2 and "LAB_EMAIL" in bad.stderr,
           f"(exit {bad.returncode})")
    fake = await FakeBotAPI(token="123456:verify-container").start()
    await run(engine, "rm", "-f", NAME)
    await run(engine, "volume", "rm", "-f", VOLUME)
    try:
        started = await run(engine, "run", "-d", "--name", NAME, "--network", "host",
                            "--stop-timeout", str(STOP_TIMEOUT), *HARDENING,
                            "-e", f"TELEGRAM_BOT_TOKEN={fake.token}", "-e", f"TELEGRAM_BASE_URL={fake.base_url}",
                            "-v", f"{VOLUME}:/data", image, "run")
        if started.returncode:
            expect("container starts", False, started.stderr.strip())
            return problems
        users = [3000 + i for i in range(3)]
        for chat in users:
            fake.send_text(chat, "my backup failed, it says not enough icloud storage")
        await fake.wait_for(lambda: all(fake.sent(c) for c in users), timeout=60, what="replies")
        expect("users answered", True, f"({len(users)})")
        for _ in range(2):
            b = await run(engine, "exec", NAME, "python", "-m", "bot", "backup-db", "/data/backups/")
            expect("backup-db /data/backups/", b.returncode == 0, b.stdout.strip() or b.stderr.strip())
        listing = (await run(engine, "exec", NAME, "sh", "-c", "ls -ln /data /data/backups")).stdout
        loose = [ln for ln in listing.splitlines() if re.match(r"^[-d]", ln) and not re.match(r"^[-d]rw[-x]------", ln)]
        expect("/data owner-only", not loose and "bot.db" in listing, loose)
        readme = (REPO / "deploy" / "README.md").read_text(encoding="utf-8")
        retention = re.search(r"^(ls -1t /data/backups/.*)$", readme, re.M)
        assert retention, "deploy/README.md lost its retention line"
        kept = (await run(engine, "exec", NAME, "sh", "-c", retention.group(1) + " && ls /data/backups")).stdout.split()
        keep = int(re.search(r"tail -n \+(\d+)", retention.group(1)).group(1)) - 1  # type: ignore[union-attr]
        expect("retention line keeps the newest", len(kept) == min(2, keep), kept)
        t0 = time.monotonic()
        await run(engine, "stop", "-t", str(STOP_TIMEOUT), NAME)
        took = time.monotonic() - t0
        code = (await run(engine, "inspect", NAME, "--format", "{{.State.ExitCode}}")).stdout.strip()
        drain = Settings().stop_drain_seconds
        expect(f"SIGTERM: exit 0 within STOP_DRAIN_SECONDS={drain} (+5 s)", code == "0" and took < drain + 5,
               f"(exit {code} after {took:.1f} s)")
    finally:
        await run(engine, "rm", "-f", NAME)
        await run(engine, "volume", "rm", "-f", VOLUME)
        await fake.stop()
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", default="backup-bot")
    parser.add_argument("--engine", default="docker", choices=("docker", "podman"))
    args = parser.parse_args()
    problems = asyncio.run(check(args.engine, args.image))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
