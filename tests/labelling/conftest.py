"""Fixtures of the labelling tests: the API on an isolated home (SQLite, filesystem store and
broker) with room for uploads, and jobs run in-process (tango.queue.execute) once queued."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from labelling.api import create_app
from labelling.records import T
from tango.queue import execute
from tests.factories import make_settings

@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path / "home")


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings)) as c:
        c.runtime = c.app.state.runtime
        yield c


def run_job(client, job: dict) -> dict:
    """Run a queued job to its end in this process, as a worker would; returns its final state."""
    assert "id" in job, job
    execute(client.runtime, job["id"])
    return client.get(f"/jobs/{job['id']}").json()


def start(client, kind: str, **params) -> dict:
    resp = client.post("/jobs", json={"kind": kind, "params": params})
    assert resp.status_code == 202, resp.text
    return run_job(client, resp.json())


def upload(client, dataset_id: str, data: bytes, **query) -> dict:
    resp = client.post(f"/datasets/{dataset_id}/imports", params=query,
                       files={"file": ("data.zip", data, "application/zip")})
    assert resp.status_code == 202, resp.text
    return run_job(client, resp.json())


def snapshot(client) -> tuple:
    """What an import may change: dataset objects in the store and the labelling rows (the job's
    own outcome row aside)."""
    store, db = client.runtime.store, client.runtime.db
    with db.begin() as conn:
        rows = tuple(conn.execute(select(func.count()).select_from(t)).scalar_one()
                     for t in (T.images, T.labels, T.classes, T.history))
    return tuple(store.list("datasets")), rows


def make_dataset(client, dataset_id: str = "ds", task: str = "detect", classes=()) -> dict:  # noqa: ANN001
    resp = client.post("/datasets", json={"id": dataset_id, "task": task, "classes": list(classes)})
    assert resp.status_code == 201, resp.text
    return resp.json()
