"""The embedded runner behind `tango up`: every API and worker as a local process.

Same code and env names as the compose deployment; SQLite and kombu's filesystem broker unless
TANGO_DATABASE_URL / TANGO_REDIS_URL say otherwise.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tango.settings import Settings
from tango.spec import SERVICES


def _die_with_parent() -> None:
    # Linux: children get SIGTERM if the runner itself is killed, so nothing is left behind.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except OSError:
        pass


@dataclass
class Proc:
    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


class EmbeddedStack:
    def __init__(self, settings: Settings, *, services: list[str] | None = None):
        self.settings = settings
        self.services = services or list(SERVICES)
        self.log_dir = settings.home / "logs"
        self.procs: list[Proc] = []

    def api_argv(self, service: str) -> list[str]:
        url = urlsplit(self.settings.service_url(service))
        return [sys.executable, "-m", "uvicorn", SERVICES[service].api_module,
                "--host", url.hostname or "127.0.0.1", "--port", str(url.port or SERVICES[service].port),
                "--log-level", "warning", "--no-access-log"]

    def worker_argv(self, service: str) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", SERVICES[service].celery_module, "worker",
                "-Q", SERVICES[service].queue, "--pool", "threads",
                "--concurrency", str(self.settings.worker_concurrency), "-n", f"{service}@%h",
                "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "INFO"]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["TANGO_HOME"] = str(self.settings.home)
        # Services call each other with the internal token; when none is configured, the embedded
        # stack makes one (kept in TANGO_HOME, readable by its owner only) rather than run open.
        env["TANGO_SERVICE_TOKEN"] = self.settings.service_token or local_service_token(self.settings.home)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _spawn(self, name: str, argv: list[str]) -> Proc:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        proc = Proc(name, argv, self.log_dir / f"{name}.log")
        log = proc.log_path.open("ab")
        proc.popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      env=self._env(), start_new_session=True, preexec_fn=_die_with_parent)
        log.close()
        self.procs.append(proc)
        return proc

    def start(self, *, timeout: float = 90.0) -> None:
        """Start every API, wait until each is ready (each migrates its own tables on startup),
        then start the workers, which need those tables."""
        self.settings.home.mkdir(parents=True, exist_ok=True)
        for service in self.services:
            self._spawn(f"{service}-api", self.api_argv(service))
        try:
            for service in self.services:
                self.wait_ready(service, timeout=timeout)
            for service in self.services:
                self._spawn(f"{service}-worker", self.worker_argv(service))
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, service: str, *, timeout: float) -> None:
        url = f"{self.settings.service_url(service)}/readyz"
        api = next(p for p in self.procs if p.name == f"{service}-api")
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if not api.alive():
                raise RuntimeError(f"{service} API exited with code {api.popen.returncode}; "
                                   f"see {api.log_path}:\n{tail(api.log_path)}")
            try:
                resp = httpx.get(url, timeout=2.0)
                if resp.status_code == 200:
                    return
                last = resp.text
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(0.2)
        raise TimeoutError(f"{service} was not ready after {timeout:.0f} s ({last}); see {api.log_path}")

    def dead(self) -> list[Proc]:
        return [p for p in self.procs if not p.alive()]

    def restart(self, proc: Proc) -> Proc:
        """Start a process that died again (same command, same log); workers pick their
        unfinished jobs back up (acks_late, checkpoints)."""
        self.procs.remove(proc)
        return self._spawn(proc.name, proc.argv)

    def stop(self, *, grace: float = 10.0) -> None:
        """Workers first (a warm shutdown lets a short task finish; a long one is killed and,
        being acks_late and checkpointed, resumes on the next start), then the APIs."""
        for group in (lambda p: p.name.endswith("-worker"), lambda p: p.name.endswith("-api")):
            procs = [p for p in self.procs if group(p) and p.alive()]
            for p in procs:
                p.popen.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace
            for p in procs:
                try:
                    p.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    os.killpg(p.popen.pid, signal.SIGKILL)
                    p.popen.wait()
        self.procs.clear()


def local_service_token(home: Path) -> str:
    path = home / "service-token"
    if path.is_file():
        return path.read_text().strip()
    home.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    return token


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
