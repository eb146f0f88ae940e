"""Private Redis and PostgreSQL servers that a test may stop and start (the machine's own servers
are shared by every test run and are never touched)."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.factories import free_port, wait_until


class PrivateRedis:
    """redis-server on a free loopback port; `persist=True` keeps an RDB file in `folder`, written
    on a clean shutdown (as the compose image does), so a restart keeps its queues."""

    def __init__(self, folder: Path, *, persist: bool):
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed")
        self.folder, self.persist, self.port = folder, persist, free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        save = ["--save", "3600 1", "--dir", str(self.folder)] if self.persist else ["--save", ""]
        log = (self.folder / "redis.log").open("ab")
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--appendonly", "no", *save], stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        import redis

        def answers() -> bool:
            try:
                return redis.Redis.from_url(self.url, socket_timeout=1).ping()
            except redis.RedisError:
                return False

        wait_until(answers, timeout=20, what="the private redis-server")

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            self.proc.wait(timeout=20)
        self.proc = None


class PrivatePostgres:
    """A throwaway cluster (initdb into a temporary folder) on a free port, run as the `postgres`
    user when the tests run as root (PostgreSQL refuses to run as root)."""

    def __init__(self, folder: Path):
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            pytest.skip("PostgreSQL server binaries (initdb) are not installed")
        self.bin = Path(bins[-1]).parent
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
            self.prefix = ["runuser", "-u", "postgres", "--"]
        self.folder, self.port = folder, free_port()
        self.data = folder / "data"
        folder.mkdir(parents=True, exist_ok=True)
        if self.prefix:
            shutil.chown(folder, "postgres", "postgres")
            folder.chmod(0o700)
            # The postgres user must be able to reach the folder through its parents.
            for parent in folder.parents:
                if parent == Path("/"):
                    break
                parent.chmod(parent.stat().st_mode | 0o011)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run([*self.prefix, str(self.bin / tool), *args], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, f"{tool} failed: {result.stdout}\n{result.stderr}"

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-w", "-t", "30",
                  "-o", f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")

    def close(self) -> None:
        try:
            self.stop()
        except AssertionError:
            pass  # already stopped

