"""Throwaway PostgreSQL and Redis servers that fault tests may stop, restart and freeze.

Each server lives in its own temporary folder on a free port; the shared servers (PostgreSQL on
5432, Redis on 6379) are never touched. Every wait is bounded; ``close()`` always cleans up.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import redis

from tests.support.servers import free_port

TIMEOUT = 30


def find_postgres_bindir() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, else the newest /usr/lib/postgresql/*/bin."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(os.path.realpath(initdb)).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda path: int(path.split("/")[-2])
    )
    for candidate in reversed(candidates):
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    return None


def find_redis_server() -> str | None:
    return shutil.which("redis-server")


def wait_for(predicate, limit: float, what: str, interval: float = 0.1):
    """Poll ``predicate`` until it returns something truthy; fail after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit} s waiting for {what}")
        time.sleep(interval)


class ThrowawayPostgres:
    """A private cluster: initdb in a temp folder, trust auth on 127.0.0.1, superuser postgres.

    initdb refuses to run as root, so under root the cluster belongs to the ``postgres`` OS user
    (commands run through ``runuser``, else ``su``) in a folder under /tmp that user owns.
    """

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="authsvc-faults-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            self._owner = pwd.getpwnam("postgres")
            os.chown(self.root, self._owner.pw_uid, self._owner.pw_gid)

    def _run(self, *args: str, timeout: float = TIMEOUT) -> str:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._owner is not None and shutil.which("runuser"):
            command = ["runuser", "-u", self._owner.pw_name, "--", *command]
        elif self._owner is not None:
            command = ["su", self._owner.pw_name, "-s", "/bin/sh", "-c", shlex.join(command)]
        result = subprocess.run(
            command, cwd=self.root, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise AssertionError(
                f"{' '.join(args[:2])} failed ({result.returncode}):\n{result.stdout}\n"
                f"{result.stderr}\n{self.server_log()}"
            )
        return result.stdout

    def server_log(self) -> str:
        try:
            return self.log.read_text()[-4000:]
        except OSError:
            return ""

    def init(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--no-instructions",
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off"
        )
        # -l: the postmaster must not inherit our pipes, or capturing pg_ctl's output never ends.
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "30",
            "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "stop", "-m", mode, "-w", "-t", "30")

    def is_running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def ensure_running(self) -> None:
        if not self.is_running():
            self.start()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres", **kwargs) -> psycopg.Connection:
        return psycopg.connect(self.url(database), connect_timeout=5, **kwargs)

    def create_database(self) -> str:
        """A fresh database; its URL."""
        name = f"faults_{uuid.uuid4().hex[:10]}"
        with self.connect(autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        try:
            if self.is_running():
                self.stop(mode="immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


class ThrowawayRedis:
    """redis-server in the foreground, as a child process: no persistence, killable at will."""

    def __init__(self, executable: str) -> None:
        self.executable = executable
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="authsvc-faults-redis-"))
        self.log = self.root / "redis.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _ping(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def start(self) -> None:
        command = [
            self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--daemonize", "no", "--dir", str(self.root),
        ]  # fmt: skip
        with self.log.open("a") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(self._ping, 15, f"redis-server on port {self.port}")
        except AssertionError as error:
            self.stop()
            raise AssertionError(f"{error}:\n{self.log.read_text()[-2000:]}") from None

    def stop(self) -> None:
        """SIGKILL: a crash, not a polite shutdown."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @contextlib.contextmanager
    def frozen(self):
        """SIGSTOP for the block: connections stay open, nothing answers (a hung server)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.process.send_signal(signal.SIGCONT)

    def ensure_running(self) -> None:
        if not self.is_running():
            self.start()

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


# -- which process owns a TCP connection -------------------------------------------------------


def _tcp_inode(local_port: int, remote_port: int) -> int | None:
    """The socket inode of the IPv4 TCP connection from ``local_port`` to ``remote_port``."""
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], int(fields[9])
            if int(local.split(":")[1], 16) == local_port and (
                int(remote.split(":")[1], 16) == remote_port
            ):
                return inode or None
    return None


def pid_of_connection(local_port: int, remote_port: int) -> int | None:
    """The process holding the client end of a TCP connection on this host (e.g. the gunicorn
    worker behind a PostgreSQL backend: pg_stat_activity.client_port -> the server's port)."""
    inode = _tcp_inode(local_port, remote_port)
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            for fd in os.scandir(f"/proc/{entry.name}/fd"):
                if os.readlink(fd.path) == target:
                    return int(entry.name)
        except OSError:
            continue  # gone, or not ours to read
    return None


def parent_pid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        # Field 4, after the parenthesised command (which may itself contain spaces).
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def command_line(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        return cmdline.read().replace(b"\0", b" ").decode(errors="replace")
