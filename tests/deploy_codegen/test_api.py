"""deploy_codegen's REST contract: refusals as problem+json that say what would work, package
listing and download, and download routes that cannot be made to climb out of the store."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
from fastapi.testclient import TestClient

from deploy_codegen.api import create_app
from tango.queue import execute
from tests.deploy_codegen.conftest import CLASSES
from tests.factories import put_model_bundle, tiny_classifier

PROBLEM = "application/problem+json"


@pytest.fixture
def client(settings, codegen_cache):
    from deploy_codegen.generate import cache_dir

    cache_dir(settings).parent.mkdir(parents=True, exist_ok=True)
    cache_dir(settings).symlink_to(codegen_cache, target_is_directory=True)
    with TestClient(create_app(settings)) as c:
        put_model_bundle(c.app.state.runtime.store, "tiny-cls", tiny_classifier(len(CLASSES)), task="classify",
                         classes=CLASSES, input_size=32)
        yield c


def problem(resp, status: int) -> str:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == PROBLEM
    return resp.json()["detail"]


def post_generate(client, **params):
    return client.post("/jobs", json={"kind": "generate", "params": {"model_id": "tiny-cls", **params}})


def test_targets_table(client):
    rows = {r["target"]: r for r in client.get("/targets").json()}
    assert rows["tensorrt"]["precisions"] == ["fp32", "fp16", "int8"] and rows["tensorrt"]["verification"] == "static"
    assert rows["tvm"]["tune"] is True and rows["tvm"]["dynamic_batch"] is False


def test_bad_option_is_refused_with_a_suggestion(client):
    detail = problem(post_generate(client, targets=["tvm"], options={"tvm": {"precision": "int8"}}), 422)
    assert "no precision 'int8'" in detail and "tensorrt" in detail
    detail = problem(post_generate(client, targets=["onnxruntime"], options={"onnxruntime": {"tune": True}}), 422)
    assert "tvm" in detail
    assert client.get("/jobs").json()["total"] == 0


def test_unknown_cpu_is_refused_with_a_suggestion(client):
    detail = problem(post_generate(client, targets=["tvm"], options={"tvm": {"cpu": "znver44"}}), 422)
    assert "LLVM knows no CPU 'znver44'" in detail and "did you mean 'znver4'" in detail and "generic" in detail
    tune = client.post("/jobs", json={"kind": "tune", "params": {"model_id": "tiny-cls", "cpu": "skylake-avx5122"}})
    assert "did you mean 'skylake-avx512'" in problem(tune, 422)
    assert client.get("/jobs").json()["total"] == 0


def test_unknown_target_gets_did_you_mean(client):
    detail = problem(post_generate(client, targets=["tensort"]), 422)
    assert "unknown target 'tensort'" in detail and "did you mean 'tensorrt'" in detail


def test_missing_model_and_missing_tuning_are_refused_before_queueing(client):
    detail = problem(client.post("/jobs", json={"kind": "generate", "params": {"model_id": "nope"}}), 422)
    assert "no model 'nope'" in detail and "autonn" in detail
    detail = problem(post_generate(client, targets=["tvm"], options={"tvm": {"tune": True}}), 422)
    assert "run a `tune` job" in detail
    detail = problem(client.post("/jobs", json={"kind": "verify", "params": {"model_id": "tiny-cls"}}), 422)
    assert "no packages yet" in detail
    assert client.get("/jobs").json()["total"] == 0


def test_list_download_manifest_and_report(client):
    job = post_generate(client, targets=["onnxruntime"], verify=False).json()
    execute(client.app.state.runtime, job["id"])
    done = client.get(f"/jobs/{job['id']}").json()
    assert done["state"] == "succeeded", done["error"]

    listing = client.get("/packages/tiny-cls").json()
    assert [p["name"] for p in listing["packages"]] == ["onnxruntime"] and listing["packages"][0]["verified"] is None
    resp = client.get("/packages/tiny-cls/onnxruntime")
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/gzip"
    assert "tiny-cls-onnxruntime.tar.gz" in resp.headers["content-disposition"]
    with tarfile.open(fileobj=io.BytesIO(resp.content), mode="r:gz") as tar:
        names = set(tar.getnames())
        manifest = json.load(tar.extractfile("onnxruntime/manifest.json"))
    for required in ("manifest.json", "labels.txt", "model.onnx", "reference/input.npy", "reference/expected.npz",
                     "reference/tolerance.json", "infer.py", "server.py", "benchmark.py", "requirements.txt",
                     "Dockerfile", "README.md", "backend.py", "runner.py"):
        assert f"onnxruntime/{required}" in names
    assert manifest == client.get("/packages/tiny-cls/onnxruntime/manifest").json()
    assert "not been verified" in problem(client.get("/packages/tiny-cls/onnxruntime/report"), 404)
    problem(client.get("/packages/tiny-cls/tvm"), 404)
    problem(client.get("/packages/other-model"), 404)

    # A separate `verify` job proves the stored package and records its report.
    job = client.post("/jobs", json={"kind": "verify", "params": {"model_id": "tiny-cls", "rounds": 2}}).json()
    execute(client.app.state.runtime, job["id"])
    done = client.get(f"/jobs/{job['id']}").json()
    assert done["state"] == "succeeded", done["error"]
    assert "| onnxruntime | run |" in done["result"]["table_markdown"]
    report = client.get("/packages/tiny-cls/onnxruntime/report").json()
    assert report["verified"] == "run" and report["parity"]["ok"] and report["job_id"] == job["id"]
    assert client.get("/packages/tiny-cls").json()["packages"][0]["summary"]["verified"] == "run"


@pytest.mark.parametrize("path", [
    "/packages/..%2F..%2Fetc/passwd",
    "/packages/tiny-cls/..%2Fcard.json",
    "/packages/tiny-cls/%2E%2E",
    "/packages/%2e%2e/onnxruntime",
    "/packages/tiny-cls/..",
    "/packages/tiny-cls/...",
    "/packages/tiny-cls/.hidden/manifest",
])
def test_download_routes_refuse_traversal(client, path):
    resp = client.get(path)
    assert resp.status_code in (404, 422) and resp.headers["content-type"] == PROBLEM, (path, resp.text)
    assert b"root:" not in resp.content and b"classes" not in resp.content
