"""Every service's REST shape: health, readiness, the Job routes, and bad input as problem+json."""

import importlib

import pytest
from fastapi.testclient import TestClient

from tango.settings import Settings
from tango.spec import SERVICES

PROBLEM = "application/problem+json"


def make_client(service: str, settings: Settings) -> TestClient:
    api = importlib.import_module(f"{service}.api")
    return TestClient(api.create_app(settings))


@pytest.fixture(params=list(SERVICES))
def client(request, settings):
    with make_client(request.param, settings) as c:
        c.service = request.param
        if request.param == "project_manager":  # its API is for signed-in users
            c.headers["Authorization"] = f"Bearer {sign_up(c)}"
        yield c


def sign_up(c: TestClient, username: str = "ada", password: str = "correct horse") -> str:
    assert c.post("/auth/register", json={"username": username, "password": password}).status_code == 201
    return c.post("/auth/token", json={"username": username, "password": password}).json()["token"]


def assert_problem(resp, status: int, fragment: str) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == PROBLEM
    body = resp.json()
    assert body["status"] == status and fragment in body["detail"]
    return body


def job_count(client) -> int:
    return client.get("/jobs").json()["total"]


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"service": client.service, "status": "ok", "checks": {}}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready"
    assert ready["checks"] == {"database": "ok", "broker": "ok", "store": "ok"}
    assert "/jobs/{job_id}/events" in client.get("/openapi.json").json()["paths"]


def test_create_get_cancel_a_job(client):
    created = client.post("/jobs", json={"kind": "selftest", "params": {"steps": 3}})
    assert created.status_code == 202
    job = created.json()
    assert job["state"] == "queued" and job["params"]["steps"] == 3
    assert client.get(f"/jobs/{job['id']}").json()["id"] == job["id"]
    assert client.post(f"/jobs/{job['id']}/cancel").json()["state"] == "cancelled"
    assert_problem(client.post(f"/jobs/{job['id']}/cancel"), 409, "already cancelled")
    # The events stream of an ended job yields its state, then an end event.
    with client.stream("GET", f"/jobs/{job['id']}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        text = "".join(stream.iter_text())
    assert "event: job" in text and 'event: end\ndata: {"state": "cancelled"}' in text


def test_unknown_kind(client):
    body = assert_problem(client.post("/jobs", json={"kind": "train_everything"}), 422, "unknown job kind")
    assert "selftest" in body["detail"]
    assert job_count(client) == 0


def test_invalid_params_name_the_field(client):
    assert_problem(client.post("/jobs", json={"kind": "selftest", "params": {"steps": 0}}), 422, "steps")
    assert_problem(client.post("/jobs", json={"kind": "selftest", "params": {"bogus": 1}}), 422, "bogus")
    assert job_count(client) == 0


def test_malformed_json(client):
    resp = client.post("/jobs", content=b'{"kind": "selftest",', headers={"content-type": "application/json"})
    assert_problem(resp, 400, "not valid JSON")
    assert job_count(client) == 0


def test_oversized_body_with_and_without_length(client):
    big = b'{"kind": "selftest", "params": {"pad": "' + b"x" * (2 << 20) + b'"}}'
    assert_problem(client.post("/jobs", content=big, headers={"content-type": "application/json"}), 413, "limit")

    def chunks():
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]

    assert_problem(client.post("/jobs", content=chunks(), headers={"content-type": "application/json"}),
                   413, "limit")
    assert job_count(client) == 0


def test_unknown_job_and_route(client):
    assert_problem(client.get("/jobs/doesnotexist"), 404, "no job")
    assert_problem(client.get("/no/such/route"), 404, "Not Found")
    assert_problem(client.get("/jobs?limit=100000"), 422, "limit")


def test_service_token_is_required_when_configured(tmp_path):
    settings = Settings(home=tmp_path / "home", service_token="t0ken")
    with make_client("autonn", settings) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 200
        assert_problem(c.get("/jobs"), 401, "Bearer")
        assert_problem(c.get("/jobs", headers={"Authorization": "Bearer wrong"}), 401, "Bearer")
        assert c.get("/jobs", headers={"Authorization": "Bearer t0ken"}).status_code == 200


def test_readiness_reports_a_broken_store(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the store folder should be")
    settings = Settings(home=tmp_path / "home", store=f"file://{blocker}/store")
    with make_client("labelling", settings) as c:
        body = assert_problem(c.get("/readyz"), 503, "store")
        assert "database" not in body["detail"]
