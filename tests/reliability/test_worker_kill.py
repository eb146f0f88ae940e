"""A labelling worker killed (SIGKILL, whole process group) in the middle of an `import`: after a
new worker takes the job over, it ends with the same result as an uninterrupted import of the same
files, and neither the store nor the database holds anything twice."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tango.settings import Settings
from tests.factories import image_bytes, start_worker, stop_process, wait_until
from tests.reliability.servers import PrivateRedis

pytestmark = pytest.mark.integration
IMAGES = 800


def image_folder(folder, n: int) -> None:  # noqa: ANN001
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(n):
        (folder / f"img{i:04d}.png").write_bytes(image_bytes(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)))


def test_import_survives_a_killed_worker(tmp_path):
    broker = PrivateRedis(tmp_path / "redis", persist=False)
    broker.start()
    env = {"TANGO_HOME": str(tmp_path / "home"), "TANGO_REDIS_URL": broker.url, "TANGO_SERVICE_TOKEN": "t",
           "TANGO_HEARTBEAT_SECONDS": "0.5", "TANGO_STALE_AFTER_SECONDS": "3", "TANGO_VISIBILITY_TIMEOUT": "6"}
    settings = Settings(**{k.removeprefix("TANGO_").lower(): v for k, v in env.items()})
    folder = tmp_path / "home" / "imports" / "pictures"
    image_folder(folder, IMAGES)
    api = __import__("labelling.api", fromlist=["create_app"])
    try:
        with TestClient(api.create_app(settings)) as client:
            client.headers["Authorization"] = "Bearer t"
            runtime = client.app.state.runtime
            for ds in ("killed", "calm"):
                assert client.post("/datasets", json={"id": ds, "task": "classify", "classes": ["a"]}).status_code == 201

            def start_import(ds: str) -> str:
                made = client.post("/jobs", json={"kind": "import", "params": {
                    "dataset_id": ds, "source": {"path": str(folder)}, "format": "none"}})
                assert made.status_code == 202, made.text
                return made.json()["id"]

            killed_id = start_import("killed")
            first = start_worker("labelling", env, tmp_path / "worker1.log")
            try:
                wait_until(lambda: 0.15 <= runtime.jobs.get(killed_id).progress < 0.85, timeout=90, interval=0.05,
                           what="the import to be checking images")
                os.killpg(first.pid, signal.SIGKILL)
                first.wait()
            finally:
                stop_process(first)
            at_kill = runtime.jobs.get(killed_id)
            assert at_kill.state.value == "running" and at_kill.progress < 0.85
            second = start_worker("labelling", env, tmp_path / "worker2.log")
            try:
                calm_id = start_import("calm")
                done = wait_until(lambda: all(runtime.jobs.get(i).state.terminal for i in (killed_id, calm_id)),
                                  timeout=180, what="both imports to end")
                assert done
            finally:
                stop_process(second)
            killed, calm = runtime.jobs.get(killed_id), runtime.jobs.get(calm_id)
            log = (tmp_path / "worker2.log").read_text()[-3000:]
            assert killed.state.value == calm.state.value == "succeeded", (killed.error, log)
            assert killed.attempts >= 2 and calm.attempts == 1
            same = {k: v for k, v in killed.result.items() if k != "dataset_id"}
            assert same == {k: v for k, v in calm.result.items() if k != "dataset_id"}
            assert killed.result["imported"] == IMAGES

            # No duplicate rows: one image row per picture, all from this job; same content both ways.
            rows = {}
            for ds in ("killed", "calm"):
                page = client.get(f"/datasets/{ds}/images", params={"limit": 500})
                total = page.json()["total"]
                assert total == IMAGES
                rows[ds] = total
            from sqlalchemy import func, select

            from labelling.records import T

            with runtime.db.begin() as conn:
                per_ds = dict(conn.execute(select(T.images.c.dataset_id, func.count())
                                           .group_by(T.images.c.dataset_id)).all())
                distinct = dict(conn.execute(select(T.images.c.dataset_id,
                                                    func.count(func.distinct(T.images.c.sha256)))
                                             .group_by(T.images.c.dataset_id)).all())
                sources = {r[0] for r in conn.execute(select(T.images.c.import_job_id)
                                                      .where(T.images.c.dataset_id == "killed"))}
                shas = {ds: {r[0] for r in conn.execute(select(T.images.c.sha256)
                                                        .where(T.images.c.dataset_id == ds))} for ds in rows}
                imports = conn.execute(select(func.count()).select_from(T.imports)
                                       .where(T.imports.c.job_id == killed_id)).scalar_one()
            assert per_ds == distinct == {"killed": IMAGES, "calm": IMAGES}
            assert sources == {killed_id} and imports == 1
            assert shas["killed"] == shas["calm"]
            # Content-addressed store keys: exactly one object per picture.
            stored = runtime.store.list("datasets/killed/images")
            assert len(stored) == IMAGES == len(set(stored))
    finally:
        broker.stop()
