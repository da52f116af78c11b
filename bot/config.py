"""Settings from the environment, validated once at start.

Every setting has a default that runs the embedded set-up (terminal chat, SQLite under
./var, Maildir instead of SMTP). A bad value fails at start with the variable named.
Secrets (token, SMTP password) may come from a file named by ``*_FILE``; they are never
logged — ``Settings.__repr__`` masks them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers

ROOT = Path(__file__).resolve().parent.parent


class ConfigError(Exception):
    """A setting is wrong; the message names the variable."""


def _secret(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    file = env.get(f"{name}_FILE", "").strip()
    if value and file:
        raise ConfigError(f"set {name} or {name}_FILE, not both")
    if file:
        try:
            return Path(file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{name}_FILE: cannot read {file}: {exc.strerror}") from exc
    return value


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from exc
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _chat_id(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a numeric Telegram chat id, got {raw!r}") from exc


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _business_hours(raw: str) -> tuple[tuple[int, int, int], ...]:
    """``mon-fri 09:00-17:30; sat 10:00-14:00`` -> (weekday, start minute, end minute)..."""
    out: list[tuple[int, int, int]] = []
    for part in (p.strip().lower() for p in raw.replace(",", ";").split(";")):
        if not part:
            continue
        try:
            days, hours = part.split()
            first, _, last = days.partition("-")
            a, b = _DAYS.index(first[:3]), _DAYS.index((last or first)[:3])
            start_s, end_s = hours.split("-")
            start, end = (int(x.split(":")[0]) * 60 + int(x.split(":")[1]) for x in (start_s, end_s))
        except (ValueError, IndexError) as exc:
            raise ConfigError(
                f"BUSINESS_HOURS: {part!r} is not like 'mon-fri 09:00-17:30' (days, then hours; ';' between)"
            ) from exc
        if not 0 <= start < end <= 24 * 60:
            raise ConfigError(f"BUSINESS_HOURS: {part!r}: the hours must go forward within one day")
        days_in = range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)]
        out += [(d, start, end) for d in days_in]
    return tuple(out)


def _time_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"BUSINESS_TZ: unknown time zone {name!r} (e.g. Europe/Berlin, America/New_York)") from exc
    return name


@dataclass(frozen=True)
class Settings:
    # storage and content
    db_path: str = str(ROOT / "var" / "bot.db")
    # PostgreSQL instead of the SQLite file (several instances on one database): the URL may
    # hold a password, so it never reaches a log (DATABASE_URL_FILE reads it from a file)
    database_url: str = field(default="", repr=False)
    db_pool_size: int = 10  # connections per process (a turn holds one; at most half the pool in turns)
    db_connect_timeout: int = 5  # seconds to open a connection (and to get one from the pool)
    db_command_timeout: int = 30  # seconds one statement may take
    content_dir: Path = ROOT / "content"
    flows_dir: Path = ROOT / "flows"
    lang: str = "en"
    log_level: str = "INFO"
    log_level_given: bool = False  # LOG_LEVEL was set: the terminal commands log at it too
    log_user_text: bool = False  # LOG_USER_TEXT=1: library DEBUG lines may show what users wrote
    semantic: bool = True  # BOT_SEMANTIC=off: the matcher runs on the rapidfuzz blend alone
    cache_dir: Path | None = None  # BOT_CACHE_DIR: the library's sentence vectors (None: ~/.cache/backup-rescue-bot)
    # Telegram
    telegram_token: str = field(default="", repr=False)
    telegram_base_url: str = "https://api.telegram.org/bot"
    telegram_base_file_url: str = "https://api.telegram.org/file/bot"
    webhook_listen: str = "0.0.0.0"
    webhook_port: int = 8080
    webhook_url: str = ""
    webhook_secret: str = field(default="", repr=False)
    # escalation: quote requests to the lab
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_tls: str = "starttls"
    smtp_username: str = ""
    smtp_password: str = field(default="", repr=False)
    mail_from: str = "backup-bot@localhost"
    lab_emails: tuple[str, ...] = ()
    maildir: str = str(ROOT / "var" / "maildir")
    lab_chat_id: int | None = None
    default_region: str = ""  # phone numbers typed without +country: read as this region's
    lab_reply_hours: int = 24  # "what happens next": the lab answers within this many hours
    # agents
    agent_chat_id: int | None = None
    admin_ids: tuple[int, ...] = ()
    pause_minutes: int = 30
    retention_days: int = 90
    quote_retention_days: int = 365  # quote requests (the lab may need them longer than transcripts)
    forget_by_group_admins: bool = False  # FORGET_BY_GROUP_ADMINS=1: the group's administrators may erase too
    wait_alert_minutes: int = 5  # a message unanswered during a takeover raises an alert after this
    business_hours: tuple[tuple[int, int, int], ...] = ()  # (weekday, start min, end min); () = always
    business_tz: str = "UTC"
    # stopping: after SIGTERM, turns in flight get this long before the bot stops anyway
    # (the platform's stop timeout — TimeoutStopSec, --stop-timeout — must be longer)
    stop_drain_seconds: int = 8

    def __repr__(self) -> str:  # secrets never reach a log
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if not f.repr:
                value = "***" if value else ""
            parts.append(f"{f.name}={value!r}")
        return "Settings(" + ", ".join(parts) + ")"

    @property
    def database(self) -> str:
        """Where the bot's data lives: DATABASE_URL when set, else the SQLite file BOT_DB."""
        return self.database_url or self.db_path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        d = cls()
        tls = env.get("SMTP_TLS", d.smtp_tls).strip().lower() or d.smtp_tls
        if tls not in ("starttls", "ssl", "none"):
            raise ConfigError(f"SMTP_TLS must be starttls, ssl or none, got {tls!r}")
        level = env.get("LOG_LEVEL", d.log_level).strip().upper() or d.log_level
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
        user_text = env.get("LOG_USER_TEXT", "").strip() or "0"
        if user_text not in ("0", "1"):
            raise ConfigError(f"LOG_USER_TEXT must be 0 or 1, got {user_text!r}")
        semantic = env.get("BOT_SEMANTIC", "").strip().lower() or "on"
        if semantic not in ("on", "off", "1", "0", "true", "false", "yes", "no"):
            raise ConfigError(f"BOT_SEMANTIC must be on or off, got {semantic!r}")
        cache_dir = env.get("BOT_CACHE_DIR", "").strip()
        base = env.get("TELEGRAM_BASE_URL", "").strip()
        base_file = env.get("TELEGRAM_BASE_FILE_URL", "").strip()
        if base and not base.startswith(("http://", "https://")):
            raise ConfigError(f"TELEGRAM_BASE_URL must start with http:// or https://, got {base!r}")
        if base and not base_file:
            base_file = base.rstrip("/").removesuffix("/bot") + "/file/bot"
        admin_raw = env.get("ADMIN_IDS", "").replace(" ", "")
        try:
            admins = tuple(int(x) for x in admin_raw.split(",") if x)
        except ValueError as exc:
            raise ConfigError(f"ADMIN_IDS must be comma-separated numeric user ids, got {admin_raw!r}") from exc
        labs = tuple(a.strip() for a in env.get("LAB_EMAIL", "").split(",") if a.strip())
        for addr in labs + ((env["MAIL_FROM"].strip(),) if env.get("MAIL_FROM", "").strip() else ()):
            if "@" not in addr or any(c in addr for c in "\r\n <>"):
                raise ConfigError(f"LAB_EMAIL / MAIL_FROM: {addr!r} is not a plain e-mail address")
        secret = _secret(env, "WEBHOOK_SECRET")
        if secret and (len(secret) > 256 or not all(c.isalnum() or c in "_-" for c in secret)):
            raise ConfigError("WEBHOOK_SECRET must be 1-256 characters of A-Z, a-z, 0-9, _ and -")
        forget_admins = env.get("FORGET_BY_GROUP_ADMINS", "").strip() or "0"
        if forget_admins not in ("0", "1"):
            raise ConfigError(f"FORGET_BY_GROUP_ADMINS must be 0 or 1, got {forget_admins!r}")
        smtp_host = env.get("SMTP_HOST", "").strip()
        region = env.get("DEFAULT_REGION", "").strip().upper()
        if region and region not in phonenumbers.SUPPORTED_REGIONS:
            raise ConfigError(f"DEFAULT_REGION must be a two-letter region code such as DE, GB or US, got {region!r}")
        if smtp_host and not labs:
            raise ConfigError("SMTP_HOST is set but LAB_EMAIL is empty: name the lab's address(es) "
                              "the quote requests go to, or unset SMTP_HOST to write them to MAILDIR")
        database_url = _secret(env, "DATABASE_URL")
        if database_url:
            scheme, sep, rest = database_url.partition("://")
            if not sep or scheme.lower() not in ("postgresql", "postgres") or not rest:
                shown = scheme if sep else "no scheme"
                raise ConfigError(f"DATABASE_URL must be postgresql://user:password@host:port/database "
                                  f"(got {shown}://…); unset it to use the SQLite file BOT_DB")
        return cls(
            db_path=env.get("BOT_DB", "").strip() or d.db_path,
            database_url=database_url,
            db_pool_size=_int(env, "DB_POOL_SIZE", d.db_pool_size, 2, 200),
            db_connect_timeout=_int(env, "DB_CONNECT_TIMEOUT", d.db_connect_timeout, 1, 300),
            db_command_timeout=_int(env, "DB_COMMAND_TIMEOUT", d.db_command_timeout, 1, 3600),
            content_dir=Path(env.get("CONTENT_DIR", "").strip() or d.content_dir),
            flows_dir=Path(env.get("FLOWS_DIR", "").strip() or d.flows_dir),
            lang=env.get("BOT_LANG", "").strip() or d.lang,
            log_level=level,
            log_level_given="LOG_LEVEL" in env,
            log_user_text=user_text == "1",
            semantic=semantic in ("on", "1", "true", "yes"),
            cache_dir=Path(cache_dir).expanduser() if cache_dir else None,
            telegram_token=_secret(env, "TELEGRAM_BOT_TOKEN"),
            telegram_base_url=base or d.telegram_base_url,
            telegram_base_file_url=base_file or d.telegram_base_file_url,
            webhook_listen=env.get("WEBHOOK_LISTEN", "").strip() or d.webhook_listen,
            webhook_port=_int(env, "WEBHOOK_PORT", d.webhook_port, 1, 65535),
            webhook_url=env.get("WEBHOOK_URL", "").strip(),
            webhook_secret=secret,
            smtp_host=smtp_host,
            smtp_port=_int(env, "SMTP_PORT", 465 if tls == "ssl" else (25 if tls == "none" else 587), 1, 65535),
            smtp_tls=tls,
            smtp_username=env.get("SMTP_USERNAME", "").strip(),
            smtp_password=_secret(env, "SMTP_PASSWORD"),
            mail_from=env.get("MAIL_FROM", "").strip() or d.mail_from,
            lab_emails=labs,
            maildir=env.get("MAILDIR", "").strip() or d.maildir,
            lab_chat_id=_chat_id(env, "LAB_CHAT_ID"),
            default_region=region,
            lab_reply_hours=_int(env, "LAB_REPLY_HOURS", d.lab_reply_hours, 1, 720),
            agent_chat_id=_chat_id(env, "AGENT_CHAT_ID"),
            admin_ids=admins,
            pause_minutes=_int(env, "AGENT_PAUSE_MINUTES", d.pause_minutes, 1, 7 * 24 * 60),
            retention_days=_int(env, "RETENTION_DAYS", d.retention_days, 1, 3650),
            quote_retention_days=_int(env, "QUOTE_RETENTION_DAYS", d.quote_retention_days, 1, 3650),
            forget_by_group_admins=forget_admins == "1",
            wait_alert_minutes=_int(env, "AGENT_WAIT_ALERT_MINUTES", d.wait_alert_minutes, 1, 24 * 60),
            business_hours=_business_hours(env.get("BUSINESS_HOURS", "")),
            business_tz=_time_zone(env.get("BUSINESS_TZ", "").strip() or d.business_tz),
            stop_drain_seconds=_int(env, "STOP_DRAIN_SECONDS", d.stop_drain_seconds, 1, 300),
        )
