"""labelling's tables and flows on real PostgreSQL (the deployed database), through a real Celery
worker on real Redis: migrate, import, label, undo, select, freeze."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from labelling.api import create_app
from tango.settings import Settings
from tests.factories import image_bytes, start_worker, stop_process, wait_until, zip_bytes

pytestmark = pytest.mark.integration


def test_labelling_flow_on_postgres_and_a_real_worker(tmp_path, pg_url, redis_url):
    env = {"TANGO_HOME": str(tmp_path / "home"), "TANGO_DATABASE_URL": pg_url, "TANGO_REDIS_URL": redis_url,
           "TANGO_MAX_BODY_BYTES": str(64 << 20)}
    settings = Settings(home=tmp_path / "home", database_url=pg_url, redis_url=redis_url)
    rng = np.random.default_rng(0)
    data = zip_bytes({f"{c}/{i}.png": image_bytes(rng.integers(0, 255, (10, 10, 3), dtype=np.uint8))
                      for i in range(12) for c in ["cat" if i % 2 else "dog"]})
    with TestClient(create_app(settings)) as client:
        worker = start_worker("labelling", env, tmp_path / "worker.log")
        try:
            def done(job: dict) -> dict:
                return wait_until(lambda: (j := client.get(f"/jobs/{job['id']}").json())["state"]
                                  in ("succeeded", "failed") and j, timeout=90, what=f"{job['kind']} job")

            assert client.post("/datasets", json={"id": "pg", "task": "classify"}).status_code == 201
            job = done(client.post("/datasets/pg/imports", files={"file": ("d.zip", data, "application/zip")}).json())
            assert job["state"] == "succeeded", (tmp_path / "worker.log").read_text()[-3000:]
            assert job["result"]["labelled"] == 12 and job["result"]["new_classes"] == ["cat", "dog"]
            image = client.get("/datasets/pg/images").json()["items"][0]
            client.put(f"/datasets/pg/images/{image['id']}/label", json={"class_name": "cat"},
                       headers={"X-Tango-User": "pat"})
            assert client.post("/datasets/pg/undo", headers={"X-Tango-User": "pat"}).json()["reverted"] == 1
            client.post("/datasets/pg/bulk", json={"action": "clear", "image_ids": [image["id"]]})
            sel = done(client.post("/jobs", json={"kind": "select", "params": {"dataset_id": "pg",
                                                                             "batch_size": 3}}).json())
            assert sel["state"] == "succeeded" and sel["result"]["selected"] == [image["id"]]
            version = client.post("/datasets/pg/versions", json={"seed": 1}).json()
            assert version["counts"]["items"] == 11 and len(version["content_hash"]) == 64
        finally:
            stop_process(worker)
