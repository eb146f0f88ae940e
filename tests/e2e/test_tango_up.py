"""`tango up` as a subprocess: every service ready, jobs through every service over HTTP,
live progress over SSE, cancel, and a Ctrl-C that leaves no process behind. Once with the
embedded defaults (SQLite, filesystem broker), once against the real Redis and PostgreSQL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tango.spec import SERVICES
from tests.factories import REPO, Stack, descendants, service_env, subprocess_env, wait_job, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["embedded", "redis+postgres"])
def stack(request, tmp_path):
    extra = {"TANGO_HEARTBEAT_SECONDS": "1", "TANGO_STALE_AFTER_SECONDS": "10", "TANGO_SSE_POLL_SECONDS": "0.1"}
    if request.param == "redis+postgres":
        extra |= {"TANGO_DATABASE_URL": request.getfixturevalue("pg_url"),
                  "TANGO_REDIS_URL": request.getfixturevalue("redis_url")}
    s = Stack(service_env(tmp_path / "home", **extra))
    try:
        s.wait_up()
        yield s
    finally:
        if s.proc.poll() is None:
            s.proc.kill()


def test_stack_runs_jobs_everywhere_and_stops_clean(stack: Stack):
    for name, url in stack.urls.items():
        ready = httpx.get(f"{url}/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["service"] == name

    status = subprocess.run([sys.executable, "-m", "tango", "status"], env=subprocess_env(stack.env),
                            capture_output=True, text=True, timeout=60, cwd=REPO)
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count("yes") == 4

    # The other services answer only calls carrying the internal token, which `tango up` made.
    autonn, labelling = stack.urls["autonn"], stack.urls["labelling"]
    assert httpx.get(f"{autonn}/jobs", timeout=5).status_code == 401
    internal = {"Authorization": f"Bearer {stack.service_token()}"}

    # The main job: project_manager drives a selftest on every other service over REST.
    pm = stack.urls["project_manager"]
    assert httpx.post(f"{pm}/jobs", json={"kind": "system_check"}, timeout=10).status_code == 401
    httpx.post(f"{pm}/auth/register", json={"username": "ada", "password": "correct horse"}, timeout=10)
    token = httpx.post(f"{pm}/auth/token", json={"username": "ada", "password": "correct horse"}).json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    check = httpx.post(f"{pm}/jobs", json={"kind": "system_check", "params": {"steps": 4}}, headers=auth,
                       timeout=10).json()
    done = wait_job(pm, check["id"], timeout=120, headers=auth)
    assert done["state"] == "succeeded", done
    children = done["result"]["services"]
    assert set(children) == {"labelling", "autonn", "deploy_codegen"}
    for name, child in children.items():
        child_job = httpx.get(f"{stack.urls[name]}/jobs/{child['job_id']}", timeout=5, headers=internal).json()
        assert child_job["state"] == "succeeded" and child_job["result"]["service"] == name

    # Live progress over SSE until the end event.
    job = httpx.post(f"{autonn}/jobs", json={"kind": "selftest", "params": {"steps": 8, "rounds": 10,
                                                                          "step_seconds": 0.2}},
                     headers=internal).json()
    events = []
    with httpx.stream("GET", f"{autonn}/jobs/{job['id']}/events", timeout=60, headers=internal) as resp:
        event = None
        for line in resp.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                events.append((event, json.loads(line[6:])))
                if event == "end":
                    break
    progress = [data["progress"] for ev, data in events if ev == "job"]
    assert events[-1] == ("end", {"state": "succeeded"})
    assert len(progress) >= 3 and progress == sorted(progress) and progress[-1] == 1.0

    # Cancel a running job: it stops at its next progress report.
    long = httpx.post(f"{labelling}/jobs", json={"kind": "selftest",
                                                 "params": {"steps": 500, "rounds": 10, "step_seconds": 0.1}},
                      headers=internal).json()
    wait_until(lambda: httpx.get(f"{labelling}/jobs/{long['id']}", headers=internal).json()["state"] == "running",
               timeout=30, what="the long job to start")
    assert httpx.post(f"{labelling}/jobs/{long['id']}/cancel", headers=internal).status_code == 200
    cancelled = wait_job(labelling, long["id"], timeout=30, headers=internal)
    assert cancelled["state"] == "cancelled" and cancelled["progress"] < 1.0

    # Ctrl-C stops everything and leaves no process behind.
    children_pids = descendants(stack.proc.pid)
    assert len(children_pids) >= 8
    stack.proc.send_signal(signal.SIGINT)
    assert stack.proc.wait(timeout=60) == 0, stack.text()
    time.sleep(0.5)
    alive = [p for p in children_pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    assert alive == []
    assert "stopped" in stack.text()
