"""A throwaway PostgreSQL cluster in a directory of its own: for the tests, the benchmark and trying the
collector on a laptop. Debian's PostgreSQL 15 binaries (``postgresql-15``), ``initdb`` run as an
unprivileged user when we are root (PostgreSQL refuses to run as root), listening on 127.0.0.1 only.

Real PostgreSQL, never a mock: the collector's guarantees (one transaction per batch, ``ON CONFLICT DO
NOTHING``) are PostgreSQL's, so that is what the tests must run against.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

PG_BIN_DIRS = (Path("/usr/lib/postgresql/15/bin"), Path("/usr/lib/postgresql/16/bin"),
               Path("/usr/lib/postgresql/17/bin"))
UNPRIVILEGED_USER = "postgres"  # created by Debian's postgresql-common


class PgTempError(RuntimeError):
    pass


def pg_bin() -> Path:
    for d in PG_BIN_DIRS:
        if (d / "initdb").exists():
            return d
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise PgTempError("PostgreSQL server binaries not found: apt-get install postgresql-15")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgTemp:
    """One cluster: ``start()``, ``stop()``, ``restart()`` (the same data and port), ``create_db(name)``,
    ``dsn(db)``. Owned by the ``postgres`` user when we are root, else by us."""

    def __init__(self, root: Path, port: int | None = None, settings: dict[str, str] | None = None) -> None:
        self.root = root
        self.data = root / "data"
        self.sockets = root / "sock"
        self.log = root / "postgres.log"
        self.port = port or free_port()
        self.settings = {"fsync": "on", "max_connections": "200", "shared_buffers": "128MB", **(settings or {})}
        self.bin = pg_bin()
        self.proc: subprocess.Popen[bytes] | None = None
        self._as_other = os.geteuid() == 0
        self.user = UNPRIVILEGED_USER if self._as_other else pwd.getpwuid(os.geteuid()).pw_name

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", UNPRIVILEGED_USER, "--", *args] if self._as_other else list(args)

    def _own(self, path: Path) -> None:
        if self._as_other:
            pw = pwd.getpwnam(UNPRIVILEGED_USER)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._own(self.root)
        for d in (self.data, self.sockets):
            d.mkdir(exist_ok=True)
            self._own(d)
        if self._as_other:  # the unprivileged user must be able to reach the directory
            p = self.root
            while p != p.parent:
                with contextlib.suppress(OSError):
                    os.chmod(p, os.stat(p).st_mode | 0o011)
                p = p.parent
        self.log.touch()
        self._own(self.log)
        subprocess.run(self._cmd(str(self.bin / "initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust",
                                 "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def start(self, timeout: float = 30.0) -> None:
        if not (self.data / "PG_VERSION").exists():
            self.init()
        opts = [f"-c{k}={v}" for k, v in self.settings.items()]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self._cmd(str(self.bin / "postgres"), "-D", str(self.data), "-h", "127.0.0.1", "-p", str(self.port),
                          "-k", str(self.sockets), *opts),
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PgTempError(f"postgres exited at start (see {self.log}):\n{self.log.read_text()[-2000:]}")
            ready = subprocess.run([str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                                   check=False)
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise PgTempError(f"postgres not ready after {timeout:.0f} s (see {self.log})")

    def stop(self, mode: str = "fast", timeout: float = 30.0) -> None:
        """``fast`` (SIGINT: roll back, exit cleanly) or ``immediate`` (SIGQUIT: a crash, recovery at start)."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        import signal
        sig = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode]
        # the postmaster runs as the unprivileged user: signal it by its pid from postmaster.pid
        pid = self.postmaster_pid() or self.proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def dsn(self, db: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{db}"

    def psql(self, db: str, sql: str) -> str:
        out = subprocess.run([str(self.bin / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                              "-d", self.dsn(db), "-c", sql], check=True, capture_output=True, text=True)
        return out.stdout.strip()

    def create_db(self, name: str) -> str:
        self.psql("postgres", f'CREATE DATABASE "{name}"')
        return self.dsn(name)


@contextlib.contextmanager
def running(root: Path, **kw: object) -> Iterator[PgTemp]:
    pg = PgTemp(root, **kw)  # type: ignore[arg-type]
    pg.start()
    try:
        yield pg
    finally:
        pg.stop()
