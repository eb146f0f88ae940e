"""Uploading an import's zip: multipart or raw, streamed under its own limit."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient

from labelling.api import create_app
from tango.settings import Settings
from tests.factories import image_bytes, make_settings, zip_bytes
from tests.labelling.conftest import make_dataset, run_job

ZIP = zip_bytes({f"i{i}.png": image_bytes(np.full((6, 6, 3), i * 20, np.uint8)) for i in range(3)})


def test_raw_zip_body_and_the_user_header(client):
    make_dataset(client, "ds", "classify", ["x"])
    resp = client.post("/datasets/ds/imports", content=ZIP, params={"format": "none"},
                       headers={"content-type": "application/zip", "X-Tango-User": "uma"})
    assert resp.status_code == 202, resp.text
    job = run_job(client, resp.json())
    assert job["params"]["user"] == "uma" and job["params"]["source"]["upload_key"].startswith("uploads/")
    assert job["result"]["imported"] == 3
    assert client.runtime.store.exists(job["params"]["source"]["upload_key"])


def test_bad_uploads_are_refused_before_any_job(client):
    make_dataset(client, "ds", "classify", ["x"])
    resp = client.post("/datasets/ds/imports", content=ZIP, headers={"content-type": "text/plain"})
    assert resp.status_code == 415 and "multipart/form-data" in resp.json()["detail"]
    resp = client.post("/datasets/ds/imports", files={"other": ("a.zip", ZIP, "application/zip")})
    assert resp.status_code == 422 and "no 'file' field" in resp.json()["detail"]
    resp = client.post("/datasets/missing/imports", files={"file": ("a.zip", ZIP, "application/zip")})
    assert resp.status_code == 404
    assert client.get("/jobs").json()["total"] == 0


def test_the_upload_limit_is_its_own(tmp_path):
    settings = Settings(home=tmp_path / "home", max_body_bytes=1 << 20, max_upload_bytes=1000)
    with TestClient(create_app(settings)) as client:
        make_dataset(client, "ds", "classify", ["x"])
        resp = client.post("/datasets/ds/imports", files={"file": ("a.zip", ZIP + b"\0" * 2000, "application/zip")})
        assert resp.status_code == 413 and "1000-byte limit" in resp.json()["detail"]
        assert client.get("/jobs").json()["total"] == 0
        assert client.app.state.runtime.store.list("uploads") == []


def test_uploads_pass_the_app_body_limit_but_json_does_not(tmp_path):
    """The upload route streams under TANGO_MAX_UPLOAD_BYTES; every other body keeps the app's
    small limit (TANGO_MAX_BODY_BYTES)."""
    with TestClient(create_app(make_settings(tmp_path / "home"))) as client:
        make_dataset(client, "ds", "classify", ["x"])
        big = zip_bytes({"big.bin": np.random.default_rng(0).bytes(2 << 20)})
        resp = client.post("/datasets/ds/imports", files={"file": ("a.zip", big, "application/zip")})
        assert resp.status_code == 202, resp.text
        resp = client.post("/datasets/ds/bulk", content=b"[" + b" " * (2 << 20) + b"]",
                           headers={"content-type": "application/json"})
        assert resp.status_code == 413 and "1048576-byte limit" in resp.json()["detail"]
