"""autonn through REST and a real Celery worker on Redis/PostgreSQL: a supernet training job whose
worker is killed mid-run resumes from its last epoch checkpoint, then search and fine-tune finish."""

import os
import signal

import pytest
from fastapi.testclient import TestClient

from autonn.api import create_app
from tango.settings import Settings
from tests.factories import TINY_RESNET, build_runtime, digits_version, start_worker, stop_process, wait_until

pytestmark = pytest.mark.integration


def test_killed_training_resumes_then_search_and_finetune(tmp_path, pg_url, redis_url):
    env = {"TANGO_HOME": str(tmp_path / "home"), "TANGO_DATABASE_URL": pg_url, "TANGO_REDIS_URL": redis_url,
           "TANGO_HEARTBEAT_SECONDS": "0.5", "TANGO_STALE_AFTER_SECONDS": "3", "TANGO_VISIBILITY_TIMEOUT": "4"}
    settings = Settings(**{k.removeprefix("TANGO_").lower(): v for k, v in env.items()})
    runtime = build_runtime("autonn", settings)
    client = TestClient(create_app(settings))
    with client:
        digits_version(runtime.store, dataset_id="digits-int", n=500)
        worker = start_worker("autonn", env, tmp_path / "w1.log")
        try:
            job = client.post("/jobs", json={"kind": "train_supernet", "params": {
                "dataset_id": "digits-int", "dataset_version": "v1", "space_options": TINY_RESNET, "epochs": 4,
                "batch_size": 32, "lr": 0.003, "n_random": 1, "predictor_archs": 10, "device": "cpu",
                "reuse": False}}).json()
            ckpts = f"runs/{job['id']}/checkpoints"
            wait_until(lambda: runtime.store.list(ckpts), timeout=120, what="the first epoch checkpoint")
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        finally:
            stop_process(worker)
        saved = {int(k.split("/")[3]) for k in runtime.store.list(ckpts)}
        assert runtime.jobs.get(job["id"]).state.value == "running"
        worker = start_worker("autonn", env, tmp_path / "w2.log")
        try:
            done = wait_until(lambda: (j := runtime.jobs.get(job["id"])).state.terminal and j, timeout=240,
                              what="the resumed training job")
            assert done.state.value == "succeeded", done.error or (tmp_path / "w2.log").read_text()[-3000:]
            assert done.attempts >= 2
            epochs = sorted(int(k.split("/")[3]) for k in runtime.store.list(ckpts) if k.endswith("supernet.pt"))
            assert epochs == [1, 2, 3, 4]  # none rewritten, none missing
            history = runtime.records.get("supernets", job["id"])["metrics"]["history"]
            assert len(history) == 4 and min(saved) >= 1

            def finish(kind: str, params: dict) -> dict:
                created = client.post("/jobs", json={"kind": kind, "params": params})
                assert created.status_code == 202, created.text
                return wait_until(lambda: (j := client.get(f"/jobs/{created.json()['id']}").json())["state"]
                                  in ("succeeded", "failed") and j, timeout=240, what=kind)

            table = finish("latency_table", {"supernet_id": job["id"], "n_fit_networks": 4, "rounds": 2})
            assert table["state"] == "succeeded", table["error"]
            search = finish("search", {"supernet_id": job["id"], "mode": "front", "n_points": 10, "generations": 5,
                                       "population": 30, "verify": False})
            assert search["state"] == "succeeded", search["error"]
            arch = search["result"]["front"][-1]["arch"]
            model = finish("finetune", {"supernet_id": job["id"], "arch": arch, "epochs": 1, "batch_size": 32,
                                        "device": "cpu"})
            assert model["state"] == "succeeded", model["error"]
            assert client.get(f"/models/{model['result']['model_id']}").json()["card"]["arch"] == arch
        finally:
            stop_process(worker)
