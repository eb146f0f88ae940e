"""A `generate` job through a real Celery worker (Redis broker, PostgreSQL state), packages
verified in the worker, listed and downloadable over REST."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from deploy_codegen.api import create_app
from deploy_codegen.generate import cache_dir
from tango.settings import Settings
from tests.deploy_codegen.conftest import CLASSES
from tests.factories import put_model_bundle, start_worker, stop_process, tiny_classifier, wait_until

pytestmark = pytest.mark.integration


def test_generate_through_a_real_worker(tmp_path, pg_url, redis_url, codegen_cache):
    env = {"TANGO_HOME": str(tmp_path / "home"), "TANGO_DATABASE_URL": pg_url, "TANGO_REDIS_URL": redis_url}
    settings = Settings(home=tmp_path / "home", database_url=pg_url, redis_url=redis_url)
    cache_dir(settings).parent.mkdir(parents=True)
    cache_dir(settings).symlink_to(codegen_cache, target_is_directory=True)
    worker = start_worker("deploy_codegen", env, tmp_path / "worker.log")
    try:
        with TestClient(create_app(settings)) as client:
            put_model_bundle(client.app.state.runtime.store, "w-cls", tiny_classifier(len(CLASSES)),
                             task="classify", classes=CLASSES, input_size=32)
            job = client.post("/jobs", json={"kind": "generate", "params": {
                "model_id": "w-cls", "targets": ["onnxruntime", "tensorrt"], "rounds": 2, "warmup": 1}}).json()
            final = wait_until(lambda: (j := client.get(f"/jobs/{job['id']}").json())["state"]
                               in ("succeeded", "failed", "cancelled") and j, timeout=240, what="generate to end")
            assert final["state"] == "succeeded", (final["error"], (tmp_path / "worker.log").read_text()[-3000:])
            assert {p["name"]: p["verified"] for p in final["result"]["packages"]} == \
                {"onnxruntime": "run", "tensorrt": "static"}
            listing = client.get("/packages/w-cls").json()
            assert {p["summary"]["verified"] for p in listing["packages"]} == {"run", "static"}
            assert client.get("/packages/w-cls/tensorrt").headers["content-type"] == "application/gzip"
    finally:
        stop_process(worker)
