"""Builders for settings, runtimes and live stacks used across the tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psutil

from tango.settings import Settings
from tango.spec import SERVICES

REPO = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("TANGO_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_BASE = os.environ.get("TANGO_TEST_REDIS", "redis://127.0.0.1:6379")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_env(home: Path, **extra: str) -> dict[str, str]:
    """TANGO_* variables for an isolated stack: its own home and free ports for every API."""
    env = {"TANGO_HOME": str(home)}
    for name in SERVICES:
        env[f"TANGO_{name.upper()}_URL"] = f"http://127.0.0.1:{free_port()}"
    env.update(extra)
    return env


def make_settings(home: Path, **overrides: object) -> Settings:
    return Settings(home=home, **overrides)


def build_runtime(service: str, settings: Settings):
    module = __import__(f"{service}.runtime", fromlist=["build_runtime"])
    return module.build_runtime(settings)


def subprocess_env(tango_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANGO_")}
    env.update(tango_env)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_worker(service: str, tango_env: dict[str, str], log: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "celery", "-A", SERVICES[service].celery_module, "worker",
            "-Q", SERVICES[service].queue, "--pool", "threads", "--concurrency", "2",
            "-n", f"{service}-{uuid.uuid4().hex[:6]}@%h",
            "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "INFO"]
    handle = log.open("ab")
    try:
        return subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, env=subprocess_env(tango_env),
                                cwd=REPO, start_new_session=True)
    finally:
        handle.close()


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def descendants(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def wait_until(predicate, *, timeout: float, interval: float = 0.2, what: str = "condition"):  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def wait_job(base_url: str, job_id: str, *, timeout: float = 120.0, headers: dict | None = None) -> dict:
    def terminal() -> dict | None:
        job = httpx.get(f"{base_url}/jobs/{job_id}", headers=headers, timeout=5).json()
        return job if job["state"] in ("succeeded", "failed", "cancelled") else None

    return wait_until(terminal, timeout=timeout, what=f"job {job_id} to end")
