"""A deploy_codegen worker killed (SIGKILL, whole process group) while a `generate` job verifies its
package: a new worker finishes the job, reusing the package the first one stored, and the store and
the database hold one package and one report per target, not two."""

from __future__ import annotations

import hashlib
import os
import signal

import pytest
from fastapi.testclient import TestClient

from tango.settings import Settings
from tests.factories import put_model_bundle, start_worker, stop_process, tiny_classifier, wait_until
from tests.reliability.servers import PrivateRedis

pytestmark = pytest.mark.integration


def test_generate_survives_a_worker_killed_while_verifying(tmp_path):
    import torch

    torch.set_num_threads(1)
    broker = PrivateRedis(tmp_path / "redis", persist=False)
    broker.start()
    env = {"TANGO_HOME": str(tmp_path / "home"), "TANGO_REDIS_URL": broker.url, "TANGO_SERVICE_TOKEN": "t",
           "TANGO_HEARTBEAT_SECONDS": "0.5", "TANGO_STALE_AFTER_SECONDS": "3", "TANGO_VISIBILITY_TIMEOUT": "6"}
    settings = Settings(**{k.removeprefix("TANGO_").lower(): v for k, v in env.items()})
    api = __import__("deploy_codegen.api", fromlist=["create_app"])
    try:
        with TestClient(api.create_app(settings)) as client:
            client.headers["Authorization"] = "Bearer t"
            runtime = client.app.state.runtime
            put_model_bundle(runtime.store, "k-cls", tiny_classifier(3), task="classify", classes=["a", "b", "c"],
                             input_size=32)
            job_id = client.post("/jobs", json={"kind": "generate", "params": {
                "model_id": "k-cls", "targets": ["onnxruntime"], "rounds": 1000, "warmup": 20}}).json()["id"]
            first = start_worker("deploy_codegen", env, tmp_path / "worker1.log")
            try:
                # Progress 0.5 up to 1.0 is the verification of the one package.
                wait_until(lambda: runtime.jobs.get(job_id).progress >= 0.5, timeout=240, interval=0.02,
                           what="the job to be verifying its package")
                os.killpg(first.pid, signal.SIGKILL)
                first.wait()
            finally:
                stop_process(first)
            at_kill = runtime.jobs.get(job_id)
            assert at_kill.state.value == "running", (at_kill.state, at_kill.message)
            stored = runtime.store.list("packages/k-cls")
            tarballs = [k for k in stored if k.endswith(".tar.gz")]
            assert len(tarballs) == 1  # built and stored before verification started
            before = hashlib.sha256(runtime.store.get_bytes(tarballs[0])).hexdigest()

            second = start_worker("deploy_codegen", env, tmp_path / "worker2.log")
            try:
                wait_until(lambda: runtime.jobs.get(job_id).state.terminal, timeout=300,
                           what="the job to end on the second worker")
            finally:
                stop_process(second)
            job = runtime.jobs.get(job_id)
            log = (tmp_path / "worker2.log").read_text()[-3000:]
            assert job.state.value == "succeeded", (job.error, log)
            assert job.attempts >= 2
            (package,) = job.result["packages"]
            assert package["verified"] == "run" and package["sha256"] == before
            stored = runtime.store.list("packages/k-cls")
            assert [k for k in stored if k.endswith(".tar.gz")] == tarballs  # the same package, not rebuilt
            reports = [k for k in stored if "/reports/" in k]
            assert reports == [f"packages/k-cls/reports/{job_id}/onnxruntime.json"]
            listing = client.get("/packages/k-cls").json()["packages"]
            assert len(listing) == 1 and listing[0]["sha256"] == before
            download = client.get("/packages/k-cls/onnxruntime")
            assert hashlib.sha256(download.content).hexdigest() == before
    finally:
        broker.stop()
