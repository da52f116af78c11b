"""``python -m bot.tg.healthcheck``: exit 0 when the webhook's ``/healthz`` says ok.

For Docker's HEALTHCHECK (the slim image has no curl). In webhook mode (WEBHOOK_URL set) it
asks ``http://127.0.0.1:$WEBHOOK_PORT/healthz``, bypassing any proxy; in polling mode there
is no endpoint, and it exits 0. The settings are read by ``bot.config`` like the bot's own
(a configuration the bot refuses is unhealthy: exit 1 with the reason).
"""

from __future__ import annotations

import json
import sys
import urllib.request

from bot.config import ConfigError, Settings


def check(port: int | str, timeout: float = 4.0) -> tuple[bool, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}/healthz", timeout=timeout) as resp:
            body = json.loads(resp.read() or b"{}")
    except Exception as exc:  # refused, timeout, 503
        return False, f"unhealthy: {exc}"
    return bool(body.get("ok")), json.dumps(body)


def main(settings: Settings | None = None) -> int:
    if settings is None:
        try:
            settings = Settings.from_env()
        except ConfigError as exc:
            print(f"unhealthy: {exc}")
            return 1
    if not settings.webhook_url:
        print("polling mode: no webhook endpoint to check")
        return 0
    ok, detail = check(settings.webhook_port)
    print(detail)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
