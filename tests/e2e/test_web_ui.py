"""The web UI wizard in a real browser (Debian's Chromium, driven by playwright-core from Node) against a
`tango up` stack on Redis and PostgreSQL: sign up, devices, a digits project uploaded by drag and drop,
keyboard labelling with undo, the target, a run watched live to the end, and a package download. Each
step's screenshot lands in test-artifacts/web_ui/."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tango import sampledata
from tango.cli_run import sample_zip
from tests.e2e.test_pipeline import PROJECT, sign_up
from tests.factories import Stack, service_env

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
WEB = REPO / "web_ui"
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts" / "web_ui"
# test_pipeline's tiny settings with one supernet epoch: this test is about the UI, not accuracy.
TRAINING = {**PROJECT["training"], "supernet_epochs": 1}


@pytest.fixture(scope="module")
def built_ui() -> Path:
    """web_ui/dist and the script's playwright-core, built here when missing (Node is needed only then)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not CHROMIUM.exists() or node is None or npm is None:
        pytest.skip("the browser test needs /usr/bin/chromium and Node (.ci/run installs chromium); "
                    f"chromium: {CHROMIUM.exists()}, node: {node}, npm: {npm}")
    if not (WEB / "node_modules" / "playwright-core").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=WEB, check=True, timeout=600)
    if not (WEB / "dist" / "index.html").is_file():
        subprocess.run([npm, "run", "build"], cwd=WEB, check=True, timeout=600)
    return WEB / "dist"


@pytest.fixture
def stack(tmp_path, pg_url, redis_url, built_ui):
    s = Stack(service_env(tmp_path / "home", TANGO_DATABASE_URL=pg_url, TANGO_REDIS_URL=redis_url))
    try:
        s.wait_up()
        yield s
    finally:
        s.stop()


def extra_zip(count: int = 6) -> bytes:
    """Unlabelled digits at the zip's root (named for the script to know the right key) and a broken file."""
    images, labels = sampledata.make_digits(size=24, seed=0)
    images, labels = images[1000:], labels[1000:]  # past the digits zip's 200: no duplicates
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(count):
            png = io.BytesIO()
            Image.fromarray(images[i]).save(png, format="PNG")
            zf.writestr(f"extra_{int(labels[i])}_{i}.png", png.getvalue())
        zf.writestr("broken.png", b"this is not a PNG")
    return buf.getvalue()


def test_wizard_in_chromium(stack: Stack, tmp_path: Path):
    pm = stack.urls["project_manager"]
    assert "<div id=\"root\">" in httpx.get(pm + "/").text  # the built UI is what `/` serves
    digits, extra = tmp_path / "digits.zip", tmp_path / "extra.zip"
    digits.write_bytes(sample_zip({"sample": "digits", "size": 24, "limit": 200}, PROJECT["classes"]))
    extra.write_bytes(extra_zip())
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)

    proc = subprocess.run(["node", "e2e/wizard.mjs", pm, str(digits), str(extra), str(ARTIFACTS)], cwd=WEB,
                          env={"PATH": shutil.which("node").rsplit("/", 1)[0] + ":/usr/bin:/bin",
                               "TANGO_E2E_TRAINING": json.dumps(TRAINING), "HOME": str(tmp_path)},
                          capture_output=True, text=True, timeout=900)
    summary = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
    assert proc.returncode == 0 and summary.get("ok"), f"{summary.get('error')}\n{proc.stderr[-3000:]}\n{stack.text()[-3000:]}"

    assert summary["login_error"] == "wrong username or password"  # problem+json detail, as written
    assert summary["rejected"] == 1 and "6 of 7 files imported" in summary["import_text"]
    assert len(summary["labelled_with_keys"]) == 6 and summary["undo_note"].startswith("undid")
    assert summary["progress"] == ["200 / 206 labelled", "206 / 206 labelled"]
    assert "measured on the first run" in summary["range_hint"]
    assert "greater than 0" in summary["budget_error"]
    assert summary["finished_before_cancel"] >= 1 and summary["retried_run"] != summary["first_run"]
    assert summary["carried_over"] >= summary["finished_before_cancel"]  # finished stages are not redone
    assert summary["run_state"] == "succeeded" and summary["report_svgs"] >= 2
    assert summary["package"]["gzip"] and summary["package"]["bytes"] > 1000
    assert "yes (ran it)" in summary["packages"] or "checked statically" in summary["packages"], summary["packages"]
    assert "meets the budgetyes" in summary["results"], summary["results"]
    assert summary["page_errors"] == []
    assert len(list(ARTIFACTS.glob("*.png"))) == len(summary["steps"]) == 12

    # What the browser labelled is what the labelling service holds; the import route is the project's own.
    ada = {"Authorization": "Bearer " + httpx.post(f"{pm}/auth/token", json={"username": "ada", "password":
                                                                              "correct horse"}).json()["token"]}
    (project,) = httpx.get(f"{pm}/projects", headers=ada).json()
    labelled = httpx.get(f"{pm}/projects/{project['id']}/labelling/images", headers=ada,
                         params={"state": "labelled", "limit": 500}).json()
    extras = {im["source_name"]: im["label"]["class_name"] for im in labelled["items"] if "extra_" in im["source_name"]}
    assert len(extras) == 6 and all(name.split("_")[1] == cls for name, cls in extras.items())
    job_id = summary["import_job_ids"][1]
    job = httpx.get(f"{pm}/projects/{project['id']}/imports/{job_id}", headers=ada).json()
    assert [r["file"] for r in job["result"]["rejected"]] == ["broken.png"]
    bob = sign_up(pm, "bob")
    assert httpx.get(f"{pm}/projects/{project['id']}/imports/{job_id}", headers=bob).status_code == 404
    bobs = httpx.post(f"{pm}/projects", headers=bob, json={**PROJECT, "budget_ms": 100}).json()
    assert httpx.get(f"{pm}/projects/{bobs['id']}/imports/{job_id}", headers=bob).status_code == 404
