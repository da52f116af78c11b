"""The deploy files as an operator uses them: the env example, stop deadlines, the image's
build order and lock, exit codes, backups into a folder, and the start-time checks of the
database (owner-only files, read-only and damaged files refused by name)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from bot.config import Settings
from bot.store import SQLiteStore
from bot.tg.cli import backup_db

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
ENV_EXAMPLE = DEPLOY / "bot.env.example"
UNIT = DEPLOY / "backup-bot.service"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
LOCK = DEPLOY / "requirements.lock"
# every place that documents how to run the container
DOCS_WITH_DOCKER = [DOCKERFILE, COMPOSE, DEPLOY / "README.md", ROOT / "docs" / "telegram.md", ROOT / "README.md"]
# what the process needs after its drain deadline: stop hooks, closing the database
CLOSE_MARGIN_S = 5


def run_bot(*args: str, env: dict[str, str] | None = None, stdin: str = "", umask: int | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    def pre() -> None:
        if umask is not None:
            os.umask(umask)

    base = {k: v for k, v in os.environ.items() if k not in ("BOT_DB", "SMTP_HOST", "LAB_EMAIL", "MAILDIR")}
    return subprocess.run([sys.executable, "-m", "bot", *args], input=stdin, capture_output=True, text=True,
                          cwd=ROOT, env={**base, **(env or {})}, timeout=timeout, preexec_fn=pre)


# -- the env example ---------------------------------------------------------------------------
def env_lines(path: Path) -> dict[str, str]:
    """The lines an EnvironmentFile= / --env-file really sets (comments skipped)."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"{path.name}: not NAME=value: {line!r}"
            out[name.strip()] = value
    return out


def dockerfile_env() -> dict[str, str]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(dict(re.findall(r"(\w+)=(\S+)", line)))
    return env


def unit_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if line.startswith("Environment="):
            env.update(dict(re.findall(r"(\w+)=(\S+)", line.removeprefix("Environment="))))
    return env


class Recording(dict[str, str]):
    """An environment that remembers which variables the code asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return super().__getitem__(key)


def test_env_example_sets_nothing_but_the_code_defaults() -> None:
    default = Settings.from_env({})
    for name, value in env_lines(ENV_EXAMPLE).items():
        assert Settings.from_env({name: value}) == default, (
            f"bot.env.example sets {name}={value}, which is not the code's default: "
            "comment it out (# {name}=...) or make it the default")


@pytest.mark.parametrize("context", [
    pytest.param({}, id="bare"),
    pytest.param({"TELEGRAM_BASE_URL": "http://127.0.0.1:8081/bot"}, id="own-bot-api"),
    pytest.param({"SMTP_TLS": "ssl"}, id="smtp-ssl"),
    pytest.param({"SMTP_TLS": "none"}, id="smtp-plain"),
    pytest.param(dockerfile_env(), id="docker-image"),
    pytest.param(unit_env(), id="systemd-unit"),
])
def test_env_example_as_shipped_overrides_nothing_worked_out(context: dict[str, str]) -> None:
    # EnvironmentFile= beats the unit's Environment=, --env-file beats the image's ENV
    with_example = Settings.from_env({**context, **env_lines(ENV_EXAMPLE)})
    assert with_example == Settings.from_env(context)


def test_env_example_lists_every_setting() -> None:
    env = Recording()
    Settings.from_env(env)
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    missing = [n for n in sorted(env.asked)
               if not re.search(rf"^(# )?{n}=", text, re.M) and not n.endswith("_FILE")]
    assert not missing, f"settings missing from bot.env.example: {missing}"
    assert "STOP_DRAIN_SECONDS" in env.asked


def test_env_example_is_read_by_compose_like_by_systemd() -> None:
    # docker-compose and systemd both skip comment lines; nothing in the file needs quoting
    for name, value in env_lines(ENV_EXAMPLE).items():
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", name) and not value.startswith(("'", '"'))


# -- stop deadlines ----------------------------------------------------------------------------
def docker_run_commands() -> Iterator[tuple[str, str]]:
    """Every documented `docker run`, continuation lines joined, comment markers removed."""
    for path in DOCS_WITH_DOCKER:
        if not path.exists():
            continue
        lines = [re.sub(r"^\s*#\s?", "", ln) if path.suffix != ".md" else ln
                 for ln in path.read_text(encoding="utf-8").splitlines()]
        i = 0
        while i < len(lines):
            if "docker run" in lines[i]:
                cmd = lines[i]
                while cmd.rstrip().endswith("\\") and i + 1 < len(lines):
                    i += 1
                    cmd = cmd.rstrip()[:-1] + " " + lines[i].strip()
                cmd = cmd[cmd.index("docker run"):].split("`")[0].strip()
                if re.search(r"\sbackup-bot(\s+run\b.*)?$", cmd):  # a whole command, not a mention
                    yield path.name, cmd
            i += 1


def test_every_platform_stop_timeout_exceeds_the_drain_deadline() -> None:
    drain = Settings().stop_drain_seconds
    timeouts: dict[str, int] = {}
    m = re.search(r"^TimeoutStopSec=(\d+)s?$", UNIT.read_text(encoding="utf-8"), re.M)
    assert m, "the unit sets no TimeoutStopSec="
    timeouts["unit TimeoutStopSec"] = int(m.group(1))
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    for name, service in compose["services"].items():
        grace = re.fullmatch(r"(\d+)s", str(service.get("stop_grace_period", "")))
        assert grace, f"compose service {name} has no stop_grace_period in seconds"
        timeouts[f"compose {name}"] = int(grace.group(1))
    runs = list(docker_run_commands())
    assert len(runs) >= 4  # the Dockerfile's two, deploy/README.md's, docs/telegram.md's
    for where, cmd in runs:
        assert re.search(r"--stop-timeout[ =]\d+", cmd), f"{where}: `{cmd}` has no --stop-timeout (default 10 s)"
    for path in DOCS_WITH_DOCKER:  # and every value stated anywhere
        for i, n in enumerate(re.findall(r"--stop-timeout[ =](\d+)", path.read_text(encoding="utf-8"))):
            timeouts[f"{path.name} --stop-timeout #{i + 1}"] = int(n)
    short = {k: v for k, v in timeouts.items() if v < drain + CLOSE_MARGIN_S}
    assert not short, f"stop timeouts not above STOP_DRAIN_SECONDS={drain} (+{CLOSE_MARGIN_S} s): {short}"
    # and the documents that state the numbers say the same
    for doc in (ROOT / "docs" / "telegram.md", DEPLOY / "README.md", ENV_EXAMPLE):
        text = doc.read_text(encoding="utf-8")
        assert "STOP_DRAIN_SECONDS" in text, doc
        for n in re.findall(r"STOP_DRAIN_SECONDS[^0-9\n]{0,20}(\d+)", text):
            assert int(n) == drain, f"{doc.name} states STOP_DRAIN_SECONDS {n}, the code {drain}"


def test_documented_docker_exec_uses_the_name_docker_run_gives() -> None:
    names = set()
    for where, cmd in docker_run_commands():
        m = re.search(r"--name[ =](\S+)", cmd)
        assert m, f"{where}: `{cmd}` has no --name"
        names.add(m.group(1))
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    names |= {s["container_name"] for s in compose["services"].values()}
    execs = [(p.name, m.group(1)) for p in DOCS_WITH_DOCKER if p.exists()
             for m in re.finditer(r"docker exec (?:-\S+ )*(\S+)", p.read_text(encoding="utf-8"))]
    assert execs
    assert all(name in names for _, name in execs), (execs, names)


# -- the image -----------------------------------------------------------------------------------
def dockerfile_instructions() -> list[str]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def test_image_installs_locked_dependencies_before_the_code() -> None:
    steps = dockerfile_instructions()
    assert re.fullmatch(r"FROM \S+@sha256:[0-9a-f]{64}", steps[0]), "base image not pinned by digest"
    lock_install = next(i for i, s in enumerate(steps) if s.startswith("RUN pip install") and "requirements.lock" in s)
    assert "--no-deps" in steps[lock_install]
    code_copies = [i for i, s in enumerate(steps) if s.startswith("COPY") and re.search(r"\b(bot|content|flows)\b", s)]
    assert code_copies and min(code_copies) > lock_install
    project_install = next(i for i, s in enumerate(steps) if s.startswith("RUN pip install") and "/tmp/src" in s)
    assert "--no-deps" in steps[project_install]  # nothing resolved at build time beyond the lock
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8")
    assert "!deploy/requirements.lock" in ignore


def locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def test_lock_pins_every_runtime_dependency_within_its_range() -> None:
    pins = locked()
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    todo = [Requirement(d) for d in deps]
    seen: set[str] = set()
    while todo:  # the whole tree, as the installed distributions declare it
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        assert name in pins, f"{req.name} (needed by the bot) is not in deploy/requirements.lock"
        assert req.specifier.contains(pins[name], prereleases=True), f"{req} but the lock pins {pins[name]}"
        try:
            todo += [Requirement(r) for r in metadata.requires(req.name) or ()]
        except metadata.PackageNotFoundError:
            pytest.fail(f"{req.name} is not installed here; reinstall with pip install -e '.[dev]'")
    extra = set(pins) - seen
    assert not extra, f"locked but not needed (regenerate the lock): {sorted(extra)}"


# -- exit codes ----------------------------------------------------------------------------------
def test_smtp_host_without_lab_email_exits_2_naming_both(tmp_path: Path) -> None:
    env = {"SMTP_HOST": "smtp.example.org", "TELEGRAM_BOT_TOKEN": "123:abc",
           "TELEGRAM_BASE_URL": "http://127.0.0.1:9/bot", "BOT_DB": str(tmp_path / "bot.db")}
    for command in ("run", "check"):
        out = run_bot(command, env=env)
        assert out.returncode == 2, (command, out.stderr)
        assert "SMTP_HOST" in out.stderr and "LAB_EMAIL" in out.stderr
        assert "Traceback" not in out.stderr


def test_check_exits_2_on_bad_content(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "content", tmp_path / "content")
    shutil.copytree(ROOT / "flows", tmp_path / "flows")
    (tmp_path / "flows" / "storage_full.yaml").write_text("steps: [unclosed\n", encoding="utf-8")
    out = run_bot("check", env={"CONTENT_DIR": str(tmp_path / "content"), "FLOWS_DIR": str(tmp_path / "flows")})
    assert out.returncode == 2  # what the unit's RestartPreventExitStatus=2 stops on
    assert "storage_full.yaml" in out.stderr


def test_unit_checks_in_the_main_process_so_exit_2_stops_restarts() -> None:
    # systemd applies RestartPreventExitStatus= to the main process only: a failing
    # ExecStartPre= would be retried every RestartSec= for ever
    unit = UNIT.read_text(encoding="utf-8")
    assert re.search(r"^RestartPreventExitStatus=.*\b2\b", unit, re.M)
    assert not re.search(r"^ExecStartPre=", unit, re.M)


# -- backups -------------------------------------------------------------------------------------
async def test_backup_into_a_folder_that_does_not_exist_yet(tmp_path: Path) -> None:
    db = tmp_path / "bot.db"
    store = await SQLiteStore.open(db)
    try:
        target = str(tmp_path / "backups") + "/"
        assert await backup_db(str(db), target) == 0
        assert await backup_db(str(db), target) == 0  # the next run too, even within the second
    finally:
        await store.close()
    folder = tmp_path / "backups"
    assert folder.is_dir()
    copies = sorted(folder.glob("bot-*.db"))
    assert len(copies) == 2
    for copy in copies:
        with sqlite3.connect(copy) as con:
            assert con.execute("PRAGMA quick_check").fetchone()[0] == "ok"


def test_documented_retention_keeps_the_newest(tmp_path: Path) -> None:
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    m = re.search(r"^(ls -1t /data/backups/.*)$", readme, re.M)
    assert m, "deploy/README.md has no retention example"
    keep = int(re.search(r"tail -n \+(\d+)", m.group(1)).group(1)) - 1
    folder = tmp_path / "data" / "backups"
    folder.mkdir(parents=True)
    for i in range(keep + 4):
        f = folder / f"bot-2026120{i % 10}-0000{i:02d}.db"
        f.write_text("x")
        os.utime(f, (1_700_000_000 + i, 1_700_000_000 + i))
    (folder / "notes.txt").write_text("not a backup")
    subprocess.run(["sh", "-c", m.group(1).replace("/data/backups", str(folder))], check=True)
    left = sorted(p.name for p in folder.iterdir())
    assert "notes.txt" in left and len(left) == keep + 1
    newest = sorted(folder.glob("bot-*.db"), key=lambda p: p.stat().st_mtime)
    assert [p.stat().st_mtime for p in newest] == [1_700_000_000 + i for i in range(4, keep + 4)]


# -- the database at start -------------------------------------------------------------------------
def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_store_creates_database_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        store = await SQLiteStore.open(tmp_path / "new" / "bot.db")
        try:
            await store.add_entries("x", ())
            files = [p for p in (tmp_path / "new").iterdir() if p.name.startswith("bot.db")]
            assert {p.name for p in files} >= {"bot.db", "bot.db-wal", "bot.db-shm"}
            assert all(mode(p) & 0o077 == 0 for p in files), {p.name: oct(mode(p)) for p in files}
            assert mode(tmp_path / "new") & 0o077 == 0
        finally:
            await store.close()
    finally:
        os.umask(old)


async def test_cli_writes_database_and_maildir_owner_only_under_umask_000(tmp_path: Path) -> None:
    from bot.escalation.store import QuoteStore
    from tests.test_mail_delivery import fields

    db = tmp_path / "bot.db"
    qs = await QuoteStore.open(str(db))
    try:
        ref, _ = await qs.create_quote("tg:1", fields())
    finally:
        await qs.close()
    maildir = tmp_path / "maildir"
    out = run_bot("outbox", "retry", ref, umask=0, env={"BOT_DB": str(db), "MAILDIR": str(maildir)})
    assert out.returncode == 0, out.stdout + out.stderr
    written = [p for p in maildir.rglob("*")]
    assert any(p.is_file() for p in written)
    loose = {str(p.relative_to(tmp_path)): oct(mode(p)) for p in written if mode(p) & 0o077}
    assert not loose, loose
    backup = run_bot("backup-db", str(tmp_path / "b") + "/", umask=0, env={"BOT_DB": str(db)})
    assert backup.returncode == 0, backup.stderr
    assert all(mode(p) & 0o077 == 0 for p in (tmp_path / "b").iterdir())


@pytest.fixture
def read_only_db(tmp_path: Path) -> Iterator[Path]:
    """A database this process can read but not write (root: an immutable file)."""
    db = tmp_path / "bot.db"
    asyncio.run(_make_db(db))
    if os.geteuid() != 0:
        db.chmod(0o444)
        yield db
        return
    chattr = shutil.which("chattr")
    if not chattr or subprocess.run([chattr, "+i", str(db)], capture_output=True).returncode:
        pytest.skip("running as root without chattr +i: cannot make a file read-only for root")
    try:
        yield db
    finally:
        subprocess.run([chattr, "-i", str(db)], check=True)


def test_read_only_database_is_refused_at_start(read_only_db: Path) -> None:
    out = run_bot("chat", "--db", str(read_only_db), stdin="my iphone wont back up anymore\n", timeout=30)
    assert out.returncode == 2, out.stdout + out.stderr
    assert str(read_only_db) in out.stderr and "read-only" in out.stderr
    assert "Traceback" not in out.stderr


async def _make_db(db: Path, rows: int = 0) -> None:
    store = await SQLiteStore.open(db)
    try:
        from bot.core.ports import Direction, Entry

        for i in range(rows):
            await store.add_entries(f"tg:{i}", [Entry(Direction.IN, f"message number {i} " * 20)])
    finally:
        await store.close()


def test_damaged_database_is_refused_at_start_naming_the_file(tmp_path: Path) -> None:
    db = tmp_path / "bot.db"
    asyncio.run(_make_db(db, rows=400))
    with sqlite3.connect(db) as con:
        pages = con.execute("PRAGMA page_count").fetchone()[0]
        size = con.execute("PRAGMA page_size").fetchone()[0]
    assert pages > 20
    with open(db, "r+b") as fh:  # garbage in the middle of the file, the header intact
        fh.seek(size * (pages // 2))
        fh.write(b"\xde\xad\xbe\xef" * (size // 4))
    for command in ("stats", "transcripts"):
        out = run_bot(command, env={"BOT_DB": str(db)})
        assert out.returncode == 2, (command, out.stdout, out.stderr)
        assert str(db) in out.stderr and "Traceback" not in out.stderr


# -- several instances: PostgreSQL, two bots, nginx in front ---------------------------------------
COMPOSE_MULTI = DEPLOY / "compose.multi.yaml"
NGINX_MULTI = DEPLOY / "nginx-multi.conf"


def test_multi_instance_compose_runs_two_webhook_bots_on_one_postgres_behind_nginx() -> None:
    compose = yaml.safe_load(COMPOSE_MULTI.read_text(encoding="utf-8"))
    services = compose["services"]
    bots = {n: s for n, s in services.items() if s.get("image") == "backup-bot"}
    assert len(bots) >= 2
    drain = Settings().stop_drain_seconds
    upstream = re.search(r"upstream backup_bot \{(.*?)\}", NGINX_MULTI.read_text(encoding="utf-8"), re.S)
    assert upstream
    for name, bot in bots.items():
        env = bot["environment"]
        assert env["DATABASE_URL"].startswith("postgresql://") and "@postgres:" in env["DATABASE_URL"]
        assert "command" not in bot  # the image's default: run --webhook
        assert bot["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert int(re.fullmatch(r"(\d+)s", bot["stop_grace_period"]).group(1)) >= drain + CLOSE_MARGIN_S
        assert f"server {name}:{env['WEBHOOK_PORT']} " in upstream.group(1)  # nginx reaches each one
        assert env["WEBHOOK_LISTEN"] == "0.0.0.0"  # inside the compose network only: no ports published
        assert "ports" not in bot
    assert services["postgres"]["healthcheck"]["test"][1] == "pg_isready"
    nginx = services["nginx"]
    assert all(nginx["depends_on"][n]["condition"] == "service_healthy" for n in bots)
    mounted = {v.split(":")[0] for v in nginx["volumes"]}
    assert "./nginx-multi.conf" in mounted and (COMPOSE_MULTI.parent / "nginx-multi.conf").exists()


def test_multi_instance_nginx_passes_a_failed_update_to_the_next_instance() -> None:
    text = NGINX_MULTI.read_text(encoding="utf-8")
    hook = re.search(r"location = /telegram \{(.*?)\n    \}", text, re.S)
    assert hook
    body = hook.group(1)
    assert "proxy_pass http://backup_bot;" in body
    m = re.search(r"proxy_next_upstream ([^;]+);", body)
    assert m and {"error", "timeout", "http_503", "non_idempotent"} <= set(m.group(1).split())
