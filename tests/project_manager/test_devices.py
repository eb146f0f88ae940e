"""Device profiles, agent tokens and measurement tasks through project_manager's REST API (TestClient
on the real app, SQLite and store); the agent's side is played by plain HTTP calls with its token."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from project_manager.api import create_app
from tango.settings import Settings
from tests.factories import onnx_colour_classifier

PROBLEM = "application/problem+json"
SERVICE = {"Authorization": "Bearer svc-token"}
SEEDS = {"host", "x86-server-cpu", "nvidia-h100", "jetson-orin", "raspberry-pi-5"}
FACTS = {"cpu": "Cortex-A76", "cores": 4, "memory_gb": 8.0, "os": "Linux 6.6", "arch": "aarch64", "gpus": [],
         "runtimes": ["onnxruntime-cpu"], "timing_runtimes": ["onnxruntime-cpu"], "max_threads": 4,
         "versions": {"onnxruntime": "1.20"}}


class PM:
    def __init__(self, client: TestClient, settings: Settings):
        self.c, self.settings = client, settings
        self.ada = self.sign_up("ada")  # the first user: an administrator
        self.bob = self.sign_up("bob")

    def sign_up(self, name: str) -> dict[str, str]:
        assert self.c.post("/auth/register", json={"username": name, "password": "correct horse"}).status_code == 201
        token = self.c.post("/auth/token", json={"username": name, "password": "correct horse"}).json()["token"]
        return {"Authorization": f"Bearer {token}"}

    def agent(self, device: str, user: dict[str, str] | None = None) -> dict[str, str]:
        """A registered agent's headers for `device`."""
        made = self.c.post(f"/devices/{device}/agent-token", headers=user or self.ada)
        assert made.status_code == 201, made.text
        headers = {"Authorization": f"Bearer {made.json()['token']}"}
        reg = self.c.post("/agent/register", headers=headers, json={"device": device, "version": "1", "facts": FACTS})
        assert reg.status_code == 200, reg.text
        return headers

    def task(self, device: str, *, n: int = 2, rounds: int = 3, task_id: str | None = None, **extra) -> dict:
        store = self.c.app.state.runtime.store
        models = []
        for i in range(n):
            key = f"measurements/{task_id or 'adhoc'}/m{i}.onnx"
            if not store.exists(key):
                store.put_bytes(key, onnx_colour_classifier()[0])
            models.append({"name": f"m{i}", "key": key, "input_shape": [1, 3, 16, 16]})
        body = {"models": models, "rounds": rounds, "runs_per_round": 2, **extra}
        if task_id:
            body["id"] = task_id
        return self.c.post(f"/devices/{device}/measurements", headers=SERVICE, json=body)


def make_pm(tmp_path, monkeypatch, **env: str):
    # Set before Settings() is built: read from the environment whether or not Settings declares them.
    for name, value in env.items():
        monkeypatch.setenv(f"TANGO_{name.upper()}", value)
    settings = Settings(home=tmp_path / "home", service_token="svc-token")
    return TestClient(create_app(settings)), settings


@pytest.fixture
def pm(tmp_path, monkeypatch):
    client, settings = make_pm(tmp_path, monkeypatch)
    with client:
        yield PM(client, settings)


def problem(resp, status: int, fragment: str) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == PROBLEM
    assert fragment in resp.json()["detail"], resp.json()["detail"]
    return resp.json()


def test_seeded_profiles_are_honest_and_read_only(pm: PM):
    problem(pm.c.get("/devices"), 401, "sign in first")
    devices = {d["name"]: d for d in pm.c.get("/devices", headers=pm.bob).json()}
    assert SEEDS <= set(devices)
    host = devices["host"]
    assert host["latency"] == "measured" and host["seeded"] and "onnxruntime-cpu" in host["runtimes"]
    assert host["facts"]["cores"] >= 1 and host["arch"]
    assert host["verified"]["onnxruntime-cpu"].startswith("verified")
    for name in SEEDS - {"host"}:
        d = devices[name]
        assert d["latency"] == "table" and d["agent"] is None
        assert set(d["verified"]) == set(d["runtimes"])
        assert all(note == "not verified: no such device reachable from CI" for note in d["verified"].values())
    assert "tensorrt" in devices["jetson-orin"]["runtimes"] and devices["nvidia-h100"]["gpu"].startswith("NVIDIA H100")
    problem(pm.c.patch("/devices/raspberry-pi-5", headers=pm.ada, json={"cpu": "faster"}), 403, "read-only")
    problem(pm.c.delete("/devices/host", headers=pm.ada), 403, "read-only")
    # Seeding is idempotent: a second app on the same database finds them, adds none, and keeps
    # what a seeded device's agent reported.
    pm.agent("raspberry-pi-5")
    with TestClient(create_app(pm.settings)) as again:
        listed = again.get("/devices", headers=pm.bob).json()
    names = [d["name"] for d in listed]
    assert sorted(names) == sorted(set(names)) and SEEDS <= set(names)
    pi = next(d for d in listed if d["name"] == "raspberry-pi-5")
    assert pi["latency"] == "measured" and pi["facts"]["cpu"] == "Cortex-A76"
    assert pi["verified"]["onnxruntime-cpu"] == "measured by its agent"
    assert pi["verified"]["tvm-llvm"] == "not verified: no such device reachable from CI"


def test_users_manage_their_own_profiles(pm: PM):
    body = {"name": "pi-zero", "cpu": "BCM2710A1", "memory_gb": 0.5, "arch": "armv7l",
            "runtimes": ["onnxruntime-cpu", "tvm-llvm"]}
    made = pm.c.post("/devices", headers=pm.bob, json=body)
    assert made.status_code == 201, made.text
    assert made.json()["latency"] == "table" and not made.json()["seeded"]
    assert made.json()["verified"] == {"onnxruntime-cpu": "not verified: declared by its owner",
                                       "tvm-llvm": "not verified: declared by its owner"}
    problem(pm.c.post("/devices", headers=pm.ada, json=body), 409, "exists")
    problem(pm.c.post("/devices", headers=pm.bob, json={**body, "name": "x", "runtimes": ["coreml"]}), 422, "runtimes")
    problem(pm.c.post("/devices", headers=pm.bob, json={**body, "name": "../etc"}), 422, "name")
    problem(pm.c.post("/devices", headers=SERVICE, json={**body, "name": "svc"}), 403, "signed-in users")
    assert pm.c.patch("/devices/pi-zero", headers=pm.bob, json={"memory_gb": 1.0}).json()["memory_gb"] == 1.0
    problem(pm.c.patch("/devices/pi-zero", headers=pm.sign_up("eve"), json={"cpu": "x"}), 403, "only the owner")
    assert pm.c.patch("/devices/pi-zero", headers=pm.ada, json={"os": "Raspbian"}).json()["os"] == "Raspbian"  # admin
    assert pm.c.get("/devices/pi-zero", headers=SERVICE).json()["owner_id"]  # autonn reads profiles too
    assert pm.c.delete("/devices/pi-zero", headers=pm.bob).status_code == 204
    problem(pm.c.get("/devices/pi-zero", headers=pm.bob), 404, "no device profile")


def test_agent_tokens_are_per_device_and_checked(pm: PM):
    pm.c.post("/devices", headers=pm.bob, json={"name": "bobs-pi", "runtimes": ["onnxruntime-cpu"]})
    problem(pm.c.post("/devices/bobs-pi/agent-token", headers=pm.sign_up("eve")), 403, "only the owner")
    problem(pm.c.post("/devices/raspberry-pi-5/agent-token", headers=pm.bob), 403, "administrator")
    problem(pm.c.post("/devices/host/agent-token", headers=pm.ada), 422, "needs no agent")
    made = pm.c.post("/devices/bobs-pi/agent-token", headers=pm.bob).json()
    token = made["token"]
    assert token.startswith("tgd_") and token not in pm.c.get("/devices/bobs-pi", headers=pm.bob).text
    agent = {"Authorization": f"Bearer {token}"}
    for bad in ({}, {"Authorization": "Bearer tgd_wrong"}, pm.bob, SERVICE):
        problem(pm.c.post("/agent/lease", headers=bad), 401, "agent token")
    problem(pm.c.post("/agent/register", headers=agent, json={"device": "raspberry-pi-5", "version": "1",
                                                              "facts": FACTS}), 403, "belongs to device 'bobs-pi'")
    problem(pm.c.post("/agent/register", headers=agent, json={"device": "bobs-pi", "version": "1",
                                                              "facts": {**FACTS, "cores": "many"}}), 422, "cores")
    assert pm.c.get("/devices/bobs-pi", headers=pm.bob).json()["latency"] == "table"  # not registered yet
    reg = pm.c.post("/agent/register", headers=agent, json={"device": "bobs-pi", "version": "1", "facts": FACTS})
    assert reg.status_code == 200 and reg.json()["lease_seconds"] > 0
    device = pm.c.get("/devices/bobs-pi", headers=pm.bob).json()
    assert device["latency"] == "measured" and device["agent"]["registered"] and device["agent"]["online"]
    assert device["facts"]["cpu"] == "Cortex-A76" and device["verified"]["onnxruntime-cpu"] == "measured by its agent"
    # A new token replaces the old one.
    pm.c.post("/devices/bobs-pi/agent-token", headers=pm.bob)
    problem(pm.c.post("/agent/heartbeat", headers=agent, json={}), 401, "agent token")


def test_measurement_task_end_to_end(pm: PM):
    problem(pm.task("raspberry-pi-5"), 422, "no agent is registered for device 'raspberry-pi-5'")
    agent = pm.agent("raspberry-pi-5")
    problem(pm.task("host"), 422, "measured by autonn itself")
    problem(pm.task("raspberry-pi-5", runtime="onnxruntime-cuda"), 422, "times onnxruntime-cpu, not")
    problem(pm.task("raspberry-pi-5", threads=8), 422, "at most 4 threads")
    missing = {"models": [{"name": "m0", "key": "measurements/none/m0.onnx", "input_shape": [1, 8]}]}
    problem(pm.c.post("/devices/raspberry-pi-5/measurements", headers=SERVICE, json=missing), 422, "no artifact")
    escape = {"models": [{"name": "m0", "key": "datasets/../x.onnx", "input_shape": [1, 8]}]}
    problem(pm.c.post("/devices/raspberry-pi-5/measurements", headers=SERVICE, json=escape), 422, "invalid segment")
    problem(pm.c.post("/devices/raspberry-pi-5/measurements", headers=pm.ada, json=missing), 403, "service token")

    created = pm.task("raspberry-pi-5", task_id="job1-table")
    assert created.status_code == 201 and created.json()["state"] == "queued"
    again = pm.task("raspberry-pi-5", task_id="job1-table")  # a redelivered job: the same task back
    assert again.status_code == 200 and again.json()["id"] == "job1-table"
    assert pm.c.post("/agent/lease", headers=agent).status_code == 200 or pytest.fail("no lease")
    task = pm.c.get("/devices/raspberry-pi-5/measurements/job1-table", headers=SERVICE).json()
    assert task["state"] == "leased" and task["attempts"] == 1
    assert pm.c.post("/agent/lease", headers=agent).status_code == 204  # nothing else waiting

    lease = task_lease(pm, "job1-table")
    model = pm.c.get("/agent/tasks/job1-table/model/m1", headers=agent)
    assert model.status_code == 200 and model.content == onnx_colour_classifier()[0]
    problem(pm.c.get("/agent/tasks/job1-table/model/nope", headers=agent), 404, "no model 'nope'")
    beat = pm.c.post("/agent/heartbeat", headers=agent, json={"task_id": "job1-table", "lease_id": lease,
                                                              "progress": 0.5, "message": "round 2/3"})
    assert beat.status_code == 200
    assert pm.c.get("/devices/raspberry-pi-5/measurements/job1-table", headers=pm.bob).json()["message"] == "round 2/3"
    problem(pm.c.post("/agent/heartbeat", headers=agent, json={"task_id": "job1-table", "lease_id": "stale"}),
            409, "no longer leased to you")

    good = {"lease_id": lease, "timings": {"m0": [0.5, 0.4, 0.45], "m1": [0.3, 0.31, 0.29]}, "noise_floor": 0.1,
            "runtime": "onnxruntime-cpu", "threads": 1, "agent_version": "1", "seconds": 1.5}
    malformed = [({**good, "timings": {"m0": [0.5, 0.4, 0.45]}}, "missing ['m1']"),
                 ({**good, "timings": {**good["timings"], "m9": [1.0, 1.0, 1.0]}}, "not in the task ['m9']"),
                 ({**good, "timings": {**good["timings"], "m1": [0.3]}}, "needs 3 per-round figures"),
                 ({**good, "timings": {**good["timings"], "m1": [0.3, -1.0, 0.2]}}, "greater than 0"),
                 ({**good, "timings": {**good["timings"], "m1": ["fast", 1, 1]}}, "valid number"),
                 ({**good, "threads": 2}, "with 1 threads"),
                 ({k: v for k, v in good.items() if k != "lease_id"}, "lease_id"),
                 ({**good, "extra": 1}, "extra")]
    for body, fragment in malformed:
        problem(pm.c.post("/agent/tasks/job1-table/results", headers=agent, json=body), 422, fragment)
    bad_json = pm.c.post("/agent/tasks/job1-table/results", headers={**agent, "content-type": "application/json"},
                         content=b'{"lease_id": ')
    assert bad_json.status_code in (400, 422) and bad_json.headers["content-type"] == PROBLEM
    still = pm.c.get("/devices/raspberry-pi-5/measurements/job1-table", headers=SERVICE).json()
    assert still["state"] == "leased" and still["results"] is None  # nothing stored

    done = pm.c.post("/agent/tasks/job1-table/results", headers=agent, json=good)
    assert done.status_code == 200, done.text
    task = pm.c.get("/devices/raspberry-pi-5/measurements/job1-table", headers=SERVICE).json()
    assert task["state"] == "succeeded" and task["results"]["timings"] == good["timings"]
    assert task["results"]["noise_floor"] == 0.1 and task["finished_at"]
    problem(pm.c.post("/agent/tasks/job1-table/results", headers=agent, json=good), 409, "results not taken")
    problem(pm.c.get("/agent/tasks/job1-table/model/m0", headers=agent), 409, "not leased")
    listed = pm.c.get("/devices/raspberry-pi-5/measurements", headers=pm.bob).json()
    assert [t["id"] for t in listed] == ["job1-table"] and listed[0]["results"] is None

    # Another device's agent sees none of it.
    other = pm.agent("jetson-orin")
    problem(pm.c.get("/agent/tasks/job1-table/model/m0", headers=other), 404, "no measurement task")


def task_lease(pm: PM, task_id: str) -> str:
    runtime = pm.c.app.state.runtime
    from sqlalchemy import select

    table = runtime.measurements.m
    with runtime.db.begin() as conn:
        return conn.execute(select(table.c.lease_id).where(table.c.id == task_id)).scalar_one()


def test_failures_cancel_and_expired_leases(tmp_path, monkeypatch):
    client, _ = make_pm(tmp_path, monkeypatch, agent_lease_seconds="0.5", agent_max_attempts="2")
    with client:
        pm = PM(client, _)
        agent = pm.agent("x86-server-cpu")
        assert pm.task("x86-server-cpu", task_id="t-expire").status_code == 201
        first = pm.c.post("/agent/lease", headers=agent).json()
        assert first["lease_seconds"] == 0.5
        assert pm.c.post("/agent/lease", headers=agent).status_code == 204  # still held
        time.sleep(0.7)  # the agent died: no heartbeat, the lease runs out
        second = pm.c.post("/agent/lease", headers=agent).json()
        assert second["id"] == "t-expire" and second["lease_id"] != first["lease_id"]
        stale = {"lease_id": first["lease_id"], "timings": {"m0": [1, 1, 1], "m1": [1, 1, 1]},
                 "runtime": "onnxruntime-cpu", "threads": 1, "agent_version": "1", "seconds": 1}
        problem(pm.c.post("/agent/tasks/t-expire/results", headers=agent, json=stale), 409, "results not taken")
        time.sleep(0.7)  # lost again: after agent_max_attempts leases the task fails with the reason
        assert pm.c.post("/agent/lease", headers=agent).status_code == 204
        failed = pm.c.get("/devices/x86-server-cpu/measurements/t-expire", headers=SERVICE).json()
        assert failed["state"] == "failed" and "took this task 2 times" in failed["error"]

        assert pm.task("x86-server-cpu", task_id="t-refused").status_code == 201
        leased = pm.c.post("/agent/lease", headers=agent).json()
        reported = pm.c.post("/agent/tasks/t-refused/failure", headers=agent,
                             json={"lease_id": leased["lease_id"], "error": "ModelRefused: custom operator domain"})
        assert reported.json()["state"] == "failed" and "custom operator" in reported.json()["error"]

        assert pm.task("x86-server-cpu", task_id="t-cancel").status_code == 201
        cancelled = pm.c.post("/devices/x86-server-cpu/measurements/t-cancel/cancel", headers=SERVICE).json()
        assert cancelled["state"] == "cancelled"
        assert pm.c.post("/agent/lease", headers=agent).status_code == 204


@pytest.mark.integration
def test_devices_and_leases_on_postgres(tmp_path, monkeypatch, pg_url):
    monkeypatch.setenv("TANGO_AGENT_LEASE_SECONDS", "0.5")
    settings = Settings(home=tmp_path / "home", service_token="svc-token", database_url=pg_url)
    with TestClient(create_app(settings)) as client:
        pm = PM(client, settings)
        assert SEEDS <= {d["name"] for d in pm.c.get("/devices", headers=pm.bob).json()}
        agent = pm.agent("raspberry-pi-5")
        assert pm.task("raspberry-pi-5", task_id="pg-1").status_code == 201
        first = pm.c.post("/agent/lease", headers=agent).json()
        assert pm.c.post("/agent/lease", headers=agent).status_code == 204
        time.sleep(0.7)
        second = pm.c.post("/agent/lease", headers=agent).json()
        assert second["id"] == "pg-1" and second["lease_id"] != first["lease_id"]
        body = {"lease_id": second["lease_id"], "timings": {"m0": [1.0, 1.1, 0.9], "m1": [2.0, 2.1, 1.9]},
                "runtime": "onnxruntime-cpu", "threads": 1, "agent_version": "1", "seconds": 1.0}
        assert pm.c.post("/agent/tasks/pg-1/results", headers=agent, json=body).json()["state"] == "succeeded"
