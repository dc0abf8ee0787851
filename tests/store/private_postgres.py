"""A private PostgreSQL server for one test: initdb and pg_ctl in a temporary directory.

Tests that stop the database on purpose (an outage) cannot use the machine's shared server, so
they start their own: trust authentication, fsync off, listening on a free 127.0.0.1 port and a
socket directory of its own. initdb refuses to run as root, so under uid 0 (CI) every server
command runs as the ``postgres`` user, who owns the directory. ``private_postgres()`` stops the
server and removes the directory whatever happens; without the binaries it skips (or fails under
TAPESCAN_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.api.server import free_port
from tests.services import require

SEARCH = (Path("/usr/local/bin"), Path("/usr/lib/postgresql/15/bin"))
SERVER_USER = "postgres"
# fsync off is safe here: an immediate stop kills the server, not the machine, so what it
# wrote reaches the files. synchronous_commit stays on: off would acknowledge commits that an
# immediate stop then loses (the last ~200 ms of WAL), which no client can recover from.
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "full_page_writes": "off",
    "max_connections": "20",
    "shared_buffers": "32MB",
}


def find_bindir() -> Path | None:
    """The directory holding PostgreSQL 15+'s ``initdb`` and ``pg_ctl``, or None."""
    candidates = []
    on_path = shutil.which("initdb")
    if on_path is not None:
        candidates.append(Path(on_path).parent)
    candidates += SEARCH
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    return None


@dataclass(slots=True)
class PrivatePostgres:
    bindir: Path
    root: Path  # everything of this server: data, sockets, log
    port: int
    run_as: str | None  # the user the server runs as when we are root

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def sockets(self) -> Path:
        return self.root / "sockets"

    @property
    def logfile(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    # ------------------------------------------------------------------ commands

    def _run(self, program: str, *args: str, timeout_s: float = 60) -> str:
        command: Sequence[str] = [str(self.bindir / program), *args]
        if self.run_as is not None:
            command = ["runuser", "-u", self.run_as, "--", *command]
        done = subprocess.run(
            command,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{program} {' '.join(args)} exited {done.returncode}: "
                f"{done.stdout}{done.stderr}\n--- server log ---\n{self.log_tail()}"
            )
        return done.stdout

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def initdb(self) -> None:
        self._run(
            "initdb",
            "-D", str(self.data),
            "-U", "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
            "--no-instructions",
        )  # fmt: skip

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = [f"-p {self.port}", f"-k {self.sockets}"]
        options += [f"-c {name}={value}" for name, value in SETTINGS.items()]
        self._run(
            "pg_ctl",
            "start",
            "-D", str(self.data),
            "-l", str(self.logfile),
            "-o", " ".join(options),
            "-w", "-t", "60",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: "fast" for a clean shutdown, "immediate" to kill it hard."""
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", "-t", "30")

    def running(self) -> bool:
        return self.postmaster_pid() is not None

    def postmaster_pid(self) -> int | None:
        try:
            first = (self.data / "postmaster.pid").read_text().splitlines()[0]
            pid = int(first)
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return None
        return pid

    def answers(self) -> bool:
        try:
            with psycopg.connect(self.url(), connect_timeout=2) as connection:
                connection.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def processes(self) -> list[int]:
        """The postmaster and every process under it (backends, background workers)."""
        root = self.postmaster_pid()
        if root is None:
            return []
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    stat = (entry / "stat").read_text()
                    parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        found = [root]
        for pid in found:  # grows while it is walked: breadth first
            found += [child for child, parent in parents.items() if parent == pid]
        return found

    def freeze(self) -> None:
        """Stop every server process (SIGSTOP): connections stay open, nothing answers."""
        for pid in self.processes():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self.processes():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGCONT)

    def shutdown(self) -> None:
        """Stop whatever still runs (the postmaster by its own pid as a last resort)."""
        if not self.running():
            return
        self.thaw()  # a frozen server would not act on pg_ctl's signal
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.stop("immediate")
        pid = self.postmaster_pid()
        if pid is not None:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A running private PostgreSQL, stopped and removed on exit."""
    bindir = find_bindir()
    if bindir is None:
        require(
            "initdb/pg_ctl (PostgreSQL 15)",
            f"not found on PATH nor in {', '.join(str(p) for p in SEARCH)}",
        )
        raise AssertionError("unreachable")  # require() skips or fails
    run_as: str | None = None
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam(SERVER_USER)
        except KeyError:
            require("a private PostgreSQL", f"running as root and there is no {SERVER_USER} user")
            raise AssertionError("unreachable") from None
        run_as = SERVER_USER
    root = Path(tempfile.mkdtemp(prefix="tapescan-pg-"))
    server = PrivatePostgres(bindir, root, free_port(), run_as)
    try:
        server.sockets.mkdir()
        if owner is not None:
            for path in (root, server.sockets):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        server.initdb()
        server.start()
        yield server
    finally:
        server.shutdown()
        shutil.rmtree(root, ignore_errors=True)
