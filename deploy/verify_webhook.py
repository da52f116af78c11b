"""Run webhook mode behind the real nginx snippet, end to end, on this machine only.

    python deploy/verify_webhook.py        (from the repository root, with nginx installed)

A fake Telegram (``bot.testing.fakeapi``) posts user messages over HTTPS to nginx running
``deploy/nginx-webhook.conf`` (ports moved to 127.0.0.1:18443/18081, a throw-away
certificate, the bot behind it on 127.0.0.1:18090); the bot (``python -m bot run
--webhook``) answers through the fake's ``sendMessage``. Then it checks what nginx refuses
(a wrong secret, GET, other paths, plain HTTP) and times a SIGTERM stop against
``STOP_DRAIN_SECONDS``. Everything lives in a temporary folder; exit 0 when all held.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import ClientSession, TCPConnector

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bot.config import Settings  # noqa: E402
from bot.testing.fakeapi import FakeBotAPI  # noqa: E402

HTTPS, HTTP, BOT_PORT = 18443, 18081, 18090
USERS = 5


def nginx_config(tmp: Path) -> Path:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=bot.example.com", "-keyout", str(tmp / "key.pem"), "-out", str(tmp / "cert.pem")],
                   check=True, capture_output=True)
    (tmp / "logs").mkdir()
    site = (REPO / "deploy" / "nginx-webhook.conf").read_text(encoding="utf-8")
    for old, new in [
        ("/etc/letsencrypt/live/bot.example.com/fullchain.pem", str(tmp / "cert.pem")),
        ("/etc/letsencrypt/live/bot.example.com/privkey.pem", str(tmp / "key.pem")),
        ("/var/log/nginx/", f"{tmp}/logs/"),
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{HTTPS} ssl http2;"),
        ("listen 80;", f"listen 127.0.0.1:{HTTP};"),
        ("127.0.0.1:8080", f"127.0.0.1:{BOT_PORT}"),
    ]:
        assert old in site, f"deploy/nginx-webhook.conf changed: {old!r} not found; update this script"
        site = site.replace(old, new)
    (tmp / "site.conf").write_text(site, encoding="utf-8")
    conf = tmp / "nginx.conf"
    conf.write_text(f"pid {tmp}/nginx.pid;\nerror_log {tmp}/logs/error.log;\nevents {{}}\n"
                    f"http {{ include {tmp}/site.conf; }}\n", encoding="utf-8")
    return conf


async def check(tmp: Path) -> list[str]:
    problems: list[str] = []

    def expect(what: str, ok: bool, detail: object) -> None:
        print(f"{'ok' if ok else 'FAILED'}: {what} ({detail})")
        if not ok:
            problems.append(what)

    conf = nginx_config(tmp)
    subprocess.run(["nginx", "-c", str(conf)], check=True)
    fake = await FakeBotAPI(token="123456:verify-token").start()
    if fake._session is not None:  # Telegram's side must accept the throw-away certificate
        await fake._session.close()
    fake._session = ClientSession(connector=TCPConnector(ssl=False))
    env = {**os.environ, "TELEGRAM_BOT_TOKEN": fake.token, "TELEGRAM_BASE_URL": fake.base_url,
           "WEBHOOK_URL": f"https://127.0.0.1:{HTTPS}/telegram", "WEBHOOK_SECRET": "verify_secret-1",
           "WEBHOOK_LISTEN": "127.0.0.1", "WEBHOOK_PORT": str(BOT_PORT), "BOT_DB": str(tmp / "data" / "bot.db"),
           "MAILDIR": str(tmp / "data" / "maildir"), "NO_PROXY": "127.0.0.1"}
    log = open(tmp / "bot.log", "w")  # noqa: SIM115 - closed below
    bot = subprocess.Popen([sys.executable, "-m", "bot", "run", "--webhook"], cwd=REPO, env=env, stderr=log)
    try:
        await fake.wait_for(lambda: fake.webhook_url, timeout=30, what="setWebhook")
        for i in range(USERS):
            fake.send_text(1000 + i, "hi, my iphone says icloud storage full and the backup stopped")
        await fake.wait_for(lambda: all(fake.sent(1000 + i) for i in range(USERS)), timeout=30, what="replies")
        expect("every user answered through nginx", True, f"{USERS} users")
        async with ClientSession(connector=TCPConnector(ssl=False)) as s:
            url = f"https://127.0.0.1:{HTTPS}"
            async with s.post(f"{url}/telegram", data="{}", headers={"X-Telegram-Bot-Api-Secret-Token": "x"}) as r:
                expect("a wrong secret is refused", r.status == 403, r.status)
            async with s.get(f"{url}/telegram") as r:
                expect("GET /telegram is refused", r.status == 403, r.status)
            async with s.get(f"{url}/healthz") as r:
                expect("/healthz from this host", r.status == 200, await r.text())
            async with s.get(f"{url}/elsewhere") as r:
                expect("other paths are 404", r.status == 404, r.status)
            async with s.get(f"http://127.0.0.1:{HTTP}/telegram", allow_redirects=False) as r:
                expect("plain HTTP redirects to HTTPS", r.status == 301, r.headers.get("Location"))
        drain = Settings.from_env().stop_drain_seconds
        t0 = time.monotonic()
        bot.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(bot.wait, 60)
        took = time.monotonic() - t0
        expect(f"SIGTERM: exit 0 within STOP_DRAIN_SECONDS={drain} (+5 s to close)",
               code == 0 and took < drain + 5, f"exit {code} after {took:.1f} s")
        mode = (tmp / "data" / "bot.db").stat().st_mode & 0o777
        expect("database owner-only", mode & 0o077 == 0, oct(mode))
    finally:
        if bot.poll() is None:
            bot.kill()
        log.close()
        subprocess.run(["nginx", "-c", str(conf), "-s", "quit"], check=False)
        await fake.stop()
    return problems


def main() -> int:
    version = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    print(version)
    with tempfile.TemporaryDirectory(prefix="bot-verify-webhook-") as tmp:
        problems = asyncio.run(check(Path(tmp)))
        if problems:
            print((Path(tmp) / "bot.log").read_text(encoding="utf-8")[-3000:], file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
