"""The profiling agent against project_manager over real HTTP on loopback: project_manager's API as a
uvicorn subprocess, `python -m tango agent` as another. Registration, timings, a bad token, malformed
results, an agent killed mid-task (the task is re-leased, not lost), the server going away and coming
back; then a latency table for a non-host device built end to end through the agent."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import torch

from tests.factories import (REPO, TINY_RESNET, free_port, onnx_colour_classifier, stop_process, subprocess_env,
                             tiny_classifier, wait_until)

SERVICE_TOKEN = "svc-agent-test"


class Server:
    """project_manager's API in its own process; stop() and start() again on the same port and home."""

    def __init__(self, home: Path, **env: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {"TANGO_HOME": str(home), "TANGO_SERVICE_TOKEN": SERVICE_TOKEN,
                    "TANGO_PROJECT_MANAGER_URL": self.url, **env}
        self.log = home.parent / f"pm-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Server:
        home = Path(self.env["TANGO_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "project_manager.api:app", "--host",
                                          "127.0.0.1", "--port", str(self.port), "--log-level", "warning"],
                                         stdout=log, stderr=subprocess.STDOUT, env=subprocess_env(self.env), cwd=REPO,
                                         start_new_session=True)

        def ready() -> bool:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=60, what="project_manager to be ready")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def http(self, method: str, path: str, headers: dict | None = None, **kw) -> httpx.Response:
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kw)


SERVICE = {"Authorization": f"Bearer {SERVICE_TOKEN}"}


def admin(server: Server) -> dict[str, str]:
    creds = {"username": "ada", "password": "correct horse"}
    assert server.http("POST", "/auth/register", json=creds).status_code == 201
    return {"Authorization": f"Bearer {server.http('POST', '/auth/token', json=creds).json()['token']}"}


def device_with_token(server: Server, user: dict[str, str], name: str) -> str:
    made = server.http("POST", "/devices", user, json={"name": name, "cpu": "loopback",
                                                       "runtimes": ["onnxruntime-cpu"]})
    assert made.status_code == 201, made.text
    return server.http("POST", f"/devices/{name}/agent-token", user).json()["token"]


def start_agent(server: Server, device: str, token: str, log: Path, *extra: str) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "tango", "agent", "--server", server.url, "--device", device,
                                 "--poll", "0.2", "--threads", "2", *extra], stdout=out, stderr=subprocess.STDOUT,
                                env=subprocess_env({"TANGO_AGENT_TOKEN": token}), cwd=REPO, start_new_session=True)


def task(server: Server, device: str, task_id: str) -> dict:
    resp = server.http("GET", f"/devices/{device}/measurements/{task_id}", SERVICE)
    assert resp.status_code == 200, resp.text
    return resp.json()


def put_models(server: Server, task_id: str, models: dict[str, bytes]) -> list[dict]:
    from tango.store import Store

    store = Store((Path(server.env["TANGO_HOME"]) / "store").as_uri())
    out = []
    for name, data in models.items():
        key = f"measurements/{task_id}/{name}.onnx"
        store.put_bytes(key, data)
        out.append({"name": name, "key": key, "input_shape": [1, 3, 16, 16] if name.startswith("colour") else
                    [1, 3, 32, 32]})
    return out


def create_task(server: Server, device: str, task_id: str, models: dict[str, bytes], **spec) -> dict:
    body = {"id": task_id, "models": put_models(server, task_id, models), "rounds": 3, "runs_per_round": 5, **spec}
    resp = server.http("POST", f"/devices/{device}/measurements", SERVICE, json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def cnn_onnx(seed: int) -> bytes:
    torch.set_num_threads(1)
    buf = io.BytesIO()
    torch.onnx.export(tiny_classifier(seed=seed), (torch.zeros(1, 3, 32, 32),), buf, opset_version=17, dynamo=False,
                      input_names=["x"], output_names=["y"])
    return buf.getvalue()


def finished(server: Server, device: str, task_id: str, timeout: float = 60) -> dict:
    return wait_until(lambda: (t := task(server, device, task_id))["state"] in ("succeeded", "failed") and t,
                      timeout=timeout, what=f"task {task_id}")


def test_agent_over_http_survives_kills_bad_input_and_a_server_restart(tmp_path):
    server = Server(tmp_path / "home", TANGO_AGENT_LEASE_SECONDS="2", TANGO_AGENT_MAX_ATTEMPTS="5").start()
    agents: list[subprocess.Popen] = []
    try:
        user = admin(server)
        token = device_with_token(server, user, "loopback")
        agent_headers = {"Authorization": f"Bearer {token}"}

        # A wrong token is refused (401), and an agent given one stops at once with a clear message.
        assert server.http("POST", "/agent/lease", {"Authorization": "Bearer tgd_nope"}).status_code == 401
        refused = subprocess.run([sys.executable, "-m", "tango", "agent", "--server", server.url, "--device",
                                  "loopback", "--token", "tgd_nope", "--once"], capture_output=True, text=True,
                                 env=subprocess_env({}), cwd=REPO, timeout=60)
        assert refused.returncode == 2 and "refused this agent's token" in refused.stderr, refused.stderr

        # Register, receive a task, post timings.
        agents.append(start_agent(server, "loopback", token, tmp_path / "agent1.log"))
        wait_until(lambda: (server.http("GET", "/devices/loopback", user).json()["agent"] or {}).get("registered"),
                   timeout=30, what="the agent to register")
        profile = server.http("GET", "/devices/loopback", user).json()
        assert profile["latency"] == "measured" and profile["facts"]["cores"] >= 1
        assert "onnxruntime-cpu" in profile["facts"]["timing_runtimes"] and profile["facts"]["versions"]["onnxruntime"]
        create_task(server, "loopback", "t1", {"colour": onnx_colour_classifier()[0], "cnn": cnn_onnx(0)})
        t1 = finished(server, "loopback", "t1")
        assert t1["state"] == "succeeded", t1["error"]
        timings = t1["results"]["timings"]
        assert set(timings) == {"colour", "cnn"} and all(len(v) == 3 and min(v) > 0 for v in timings.values())
        assert t1["results"]["noise_floor"] >= 0 and t1["attempts"] == 1
        assert sum(timings["cnn"]) > sum(timings["colour"])  # a CNN costs more than a pooled linear layer
        agents[0].send_signal(signal.SIGKILL)
        agents[0].wait()

        # Malformed results over HTTP: 422, nothing stored (here we hold the lease ourselves).
        create_task(server, "loopback", "t2", {"cnn": cnn_onnx(1), "cnn2": cnn_onnx(2)}, rounds=20,
                    runs_per_round=1000)  # about 4 s of timing: long enough to be killed in
        held = server.http("POST", "/agent/lease", agent_headers).json()
        assert held["id"] == "t2"
        for body in ({"lease_id": held["lease_id"], "timings": {"cnn": [1.0] * 20}},
                     {"lease_id": held["lease_id"], "timings": {"cnn": [1.0] * 20, "cnn2": [0.0] * 20},
                      "runtime": "onnxruntime-cpu", "threads": 1, "agent_version": "1", "seconds": 1.0}):
            bad = server.http("POST", "/agent/tasks/t2/results", agent_headers, json=body)
            assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json", bad.text
        assert task(server, "loopback", "t2")["results"] is None

        # Our lease runs out; a real agent takes the task over; it is killed mid-task; the next
        # agent gets the task after that lease runs out too, and finishes it.
        agents.append(start_agent(server, "loopback", token, tmp_path / "agent2.log"))
        wait_until(lambda: (t := task(server, "loopback", "t2"))["attempts"] == 2 and t["progress"] >= 0.2,
                   timeout=60, what="the second agent to be timing t2")
        agents[1].send_signal(signal.SIGKILL)
        agents[1].wait()
        assert task(server, "loopback", "t2")["state"] == "leased"  # held by a dead agent, not lost
        agents.append(start_agent(server, "loopback", token, tmp_path / "agent3.log"))
        t2 = finished(server, "loopback", "t2", timeout=120)
        assert t2["state"] == "succeeded" and t2["attempts"] == 3, t2
        assert all(len(v) == 20 for v in t2["results"]["timings"].values())

        # The server goes away and comes back: the agent backs off, reconnects and keeps working.
        server.stop()
        wait_until(lambda: "retrying in" in (tmp_path / "agent3.log").read_text(), timeout=30,
                   what="the agent to notice the server is gone")
        server.start()
        create_task(server, "loopback", "t3", {"colour": onnx_colour_classifier()[0]})
        assert finished(server, "loopback", "t3")["state"] == "succeeded"
        assert agents[2].poll() is None
    finally:
        for proc in agents:
            stop_process(proc)
        server.stop()


def test_latency_table_for_a_device_is_built_through_its_agent(tmp_path):
    from fastapi.testclient import TestClient

    from autonn.api import create_app
    from autonn.latency import LatencyTable
    from autonn.spaces import get_search_space
    from tango.queue import execute
    from tango.settings import Settings
    from tests.factories import build_runtime

    torch.set_num_threads(1)
    home = tmp_path / "home"
    server = Server(home).start()
    agent = None
    try:
        user = admin(server)
        token = device_with_token(server, user, "lab-cpu")
        settings = Settings(home=home, project_manager_url=server.url, service_token=SERVICE_TOKEN)
        runtime = build_runtime("autonn", settings)
        params = {"space": "resnet_cls", "space_options": TINY_RESNET, "device": "lab-cpu", "n_fit_networks": 4,
                  "rounds": 2, "runs_per_round": 5, "n_eval": 4}
        with TestClient(create_app(settings), headers=SERVICE) as autonn:
            refused = autonn.post("/jobs", json={"kind": "latency_table", "params": params})
            assert refused.status_code == 422
            assert "no agent is registered for device 'lab-cpu'" in refused.json()["detail"]
            unknown = autonn.post("/jobs", json={"kind": "latency_table", "params": {**params, "device": "nope"}})
            assert unknown.status_code == 422 and "no device profile 'nope'" in unknown.json()["detail"]

            agent = start_agent(server, "lab-cpu", token, tmp_path / "agent.log")
            wait_until(lambda: (server.http("GET", "/devices/lab-cpu", user).json()["agent"] or {}).get("registered"),
                       timeout=30, what="the agent to register")
            created = autonn.post("/jobs", json={"kind": "latency_table", "params": params})
            assert created.status_code == 202, created.text
            job_id = created.json()["id"]
            assert execute(runtime, job_id) == "succeeded", runtime.jobs.get(job_id).error
            result = runtime.jobs.get(job_id).result

            space = get_search_space("resnet_cls", **TINY_RESNET)
            table = LatencyTable.from_json(autonn.get(f"/latency-tables/{result['latency_table_id']}").content)
            assert table.device == "lab-cpu" and set(table.entries) == {b.key for b in space.all_blocks()}
            assert table.n_networks_fit == 4 and table.overhead_ms > 0
            report = autonn.get(f"/latency-tables/{result['latency_table_id']}/report").json()
            assert report["n_networks"] == 4 and report["device"] == "lab-cpu"
            for key in ("mape", "within_10pct", "kendall_tau", "noise_floor", "table_build_seconds"):
                assert report[key] is not None and report[key] >= -1, key
            assert result["evaluation"] == {k: report[k] for k in result["evaluation"]}
            plot = autonn.get(f"/latency-tables/{result['latency_table_id']}/report.svg")
            assert plot.headers["content-type"] == "image/svg+xml" and b"<svg" in plot.content
            print(json.dumps({k: report[k] for k in result["evaluation"]}))

        # Both phases ran on the device, through the agent: one task each, plus `-2`, `-3`, ... when
        # a phase's noise floor called for more rounds (autonn.latency._measure_until_quiet).
        tasks = server.http("GET", "/devices/lab-cpu/measurements", SERVICE).json()
        for phase in ("table", "eval"):
            ids = {t["id"] for t in tasks if t["id"].startswith(f"{job_id}-{phase}")}
            assert ids == {f"{job_id}-{phase}"} | {f"{job_id}-{phase}-{n}" for n in range(2, len(ids) + 1)}, ids
            assert len(ids) <= 4  # at most 4 x the rounds asked for
        assert len(tasks) == sum(t["id"].startswith(f"{job_id}-") for t in tasks)
        assert all(t["state"] == "succeeded" and t["attempts"] == 1 for t in tasks)
        table_task = task(server, "lab-cpu", f"{job_id}-table")
        assert len(table_task["results"]["timings"]) == len(table.entries) + 4 + 1  # blocks, networks, empty model
    finally:
        if agent is not None:
            stop_process(agent)
        server.stop()


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
