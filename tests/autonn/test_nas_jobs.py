"""autonn's job kinds end to end in-process (the real domain code, real store and SQLite): a
supernet trained on digits, a host latency table, a budgeted search and a fine-tune + export."""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from autonn.api import create_app
from autonn.jobs.finetune import LR_BY_TASK
from autonn.jobs.train_supernet import TrainSupernetParams, recipe
from autonn.pareto import hypervolume_2d
from autonn.spaces import get_search_space
from tango.datasets import manifest_key
from tango.queue import execute
from tests.factories import TINY_RESNET, TINY_YOLO, build_runtime, digits_version, shapes_version


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from tango.settings import Settings

    settings = Settings(home=tmp_path_factory.mktemp("autonn") / "home")
    runtime = build_runtime("autonn", settings)
    runtime.migrate()
    digits_version(runtime.store, n=600)
    client = TestClient(create_app(settings))
    with client:
        yield runtime, client


def run(runtime, client, kind: str, params: dict) -> dict:
    resp = client.post("/jobs", json={"kind": kind, "params": params})
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    assert execute(runtime, job_id) == "succeeded", runtime.jobs.get(job_id).error
    return runtime.jobs.get(job_id).result


def test_train_search_finetune_export(stack):
    runtime, client = stack
    params = {"dataset_id": "digits", "dataset_version": "v1", "space_options": TINY_RESNET, "epochs": 2,
              "batch_size": 32, "lr": 0.003, "n_random": 1, "predictor_archs": 12, "device": "cpu"}
    trained = run(runtime, client, "train_supernet", params)
    supernet_id = trained["supernet_id"]
    assert trained["val_largest"] > 0.3 and trained["cardinality"] >= 1e8
    # 12 measured sub-networks: 10 random, then 2 (the default 30 % share, capped to keep 10 random)
    # picked from the predictor's Pareto fronts against FLOPs.
    assert trained["predictor"]["n_train"] + trained["predictor"]["n_test"] == 12
    assert client.get(f"/supernets/{supernet_id}").json()["state"] == "ready"
    # Same space, dataset version and recipe: the trained supernet is reused (on any device).
    again = run(runtime, client, "train_supernet", {**params, "device": "auto"})
    assert again == {**again, "supernet_id": supernet_id, "reused": True}
    # Another recipe (more epochs, or the task's default lr) is a new training, not the old weights.
    made_with = client.get(f"/supernets/{supernet_id}").json()["metrics"]["recipe"]
    assert made_with == recipe(params=TrainSupernetParams(**params), task="classify")
    def reusable(made_with: dict) -> dict | None:
        return runtime.records.reusable_supernet(space="resnet_cls", options=space.options, dataset_id="digits",
                                                 version="v1", recipe=made_with)
    space = get_search_space("resnet_cls", **TINY_RESNET)
    assert reusable(made_with)["id"] == supernet_id
    for changed in ({"epochs": 3}, {"lr": None}):
        assert reusable(recipe(params=TrainSupernetParams(**{**params, **changed}), task="classify")) is None

    table = run(runtime, client, "latency_table", {"supernet_id": supernet_id, "n_fit_networks": 6, "rounds": 3})
    assert table["entries"] > 100 and table["noise_floor"] >= 0

    fastest_reply = client.post("/jobs", json={"kind": "search", "params": {"supernet_id": supernet_id,
                                                                           "budget_ms": 0.0001}})
    assert fastest_reply.status_code == 422
    assert fastest_reply.headers["content-type"] == "application/problem+json"
    assert "below the fastest sub-network on host" in fastest_reply.json()["detail"]

    searched_tables = client.get("/latency-tables").json()
    budget = 1.5 * json.loads(client.get(f"/latency-tables/{searched_tables[0]['id']}").content)["overhead_ms"] + 0.3
    search = run(runtime, client, "search", {"supernet_id": supernet_id, "budget_ms": budget, "generations": 10,
                                             "population": 24})
    assert search["verified"] and search["measured_ms"] <= budget
    assert search["predicted_ms"] > 0 and search["rounds"]
    # Every reading is kept; one within 5 % of the budget is taken near_budget_repeats (2) more times.
    for r in search["rounds"]:
        near = abs(r["timings_ms"][0] - budget) <= 0.05 * budget
        assert len(r["timings_ms"]) == (3 if near else 1)
        assert r["measured_ms"] == pytest.approx(float(np.median(r["timings_ms"])))
    # The default re-ranks a shortlist per input size on the supernet: the pick measured best.
    shortlisted = {get_search_space("resnet_cls", **TINY_RESNET).input_size(c["arch"]) for c in search["shortlist"]}
    assert len(shortlisted) > 1 and all(0 <= c["supernet_metric"] <= 1 for c in search["shortlist"])
    assert search["supernet_metric"] == max(c["supernet_metric"] for c in search["shortlist"])
    assert search["refine_epochs"] == 0 and search["finetuned_metric"] is None  # classification: the supernet decides

    predicted = run(runtime, client, "search", {"supernet_id": supernet_id, "mode": "front", "n_points": 10,
                                                "generations": 10, "population": 40, "verify": False,
                                                "front_candidates": 0})
    ms = [p["predicted_ms"] for p in predicted["front"]]
    assert len(ms) >= 10 and ms == sorted(ms) and all(p["supernet_metric"] is None for p in predicted["front"])
    # The same front with its points evenly spaced in latency: the same search, so the same two
    # ends; the default's points cover at least as much of the trade-off (hypervolume in its box).
    even = run(runtime, client, "search", {"supernet_id": supernet_id, "mode": "front", "n_points": 10,
                                           "generations": 10, "population": 40, "verify": False,
                                           "front_candidates": 0, "front_spread": "latency"})

    def area(points: list[dict]) -> float:
        box = (points[0]["predicted_metric"], points[-1]["predicted_ms"])
        return hypervolume_2d([(p["predicted_metric"], p["predicted_ms"]) for p in points], box)

    assert [even["front"][i]["arch"] for i in (0, -1)] == [predicted["front"][i]["arch"] for i in (0, -1)]
    assert len(even["front"]) == len(predicted["front"]) and area(predicted["front"]) >= area(even["front"])
    # By default the front is drawn from 30 candidates measured on the supernet: non-dominated on
    # the measured metric, each point keeping its predicted one. This tiny validation split tells
    # apart few of them, and the reply says so.
    front = run(runtime, client, "search", {"supernet_id": supernet_id, "mode": "front", "n_points": 10,
                                            "generations": 10, "population": 40, "verify": False})
    assert front["front_candidates"] == 30
    measured, ms = [p["supernet_metric"] for p in front["front"]], [p["predicted_ms"] for p in front["front"]]
    assert len(measured) >= 2 and ms == sorted(ms)
    assert all(0 <= m <= 1 for m in measured) and all(0 <= p["predicted_metric"] <= 1 for p in front["front"])
    assert measured == sorted(measured) and len(set(measured)) == len(measured)
    assert len(measured) == 10 or f"only {len(measured)} of the 10 points" in front["note"]

    search_id = client.get("/jobs?kind=search&state=succeeded").json()["items"][-1]["id"]
    model = run(runtime, client, "finetune", {"supernet_id": supernet_id, "search_job_id": search_id, "epochs": 1,
                                              "batch_size": 32, "device": "cpu"})
    card = client.get(f"/models/{model['model_id']}/files/card.json").json()
    assert card["metric"]["name"] == "top1" and 0 <= card["metric"]["val"] <= 1
    assert card["finetune"] == {**card["finetune"], "epochs": 1, "lr": LR_BY_TASK["classify"], "distill": True}
    # Fine-tuning never ships a model worse on validation than the supernet's own sub-network.
    assert card["metric"]["val"] >= card["metric"]["val_before_finetune"]
    assert card["latency"]["budget_ms"] == budget and card["latency"]["measured_ms"] > 0
    assert len(card["latency"]["timings_ms"]) == 3  # the card's figure is the median of three readings
    assert card["latency"]["measured_ms"] == pytest.approx(float(np.median(card["latency"]["timings_ms"])))
    assert card["latency"]["predicted_ms"] > 0 and card["onnx"]["opset"] == 17
    assert card["onnx"]["max_abs_diff_vs_torch"] < 1e-4

    # Re-ranking needs the supernet's dataset version: gone, the search says so before it queues.
    manifest = Path(runtime.store._path(manifest_key("digits", "v1")))
    manifest.rename(manifest.with_suffix(".gone"))
    gone = client.post("/jobs", json={"kind": "search", "params": {"supernet_id": supernet_id, "budget_ms": budget}})
    assert gone.status_code == 422 and "rerank_per_size 0" in gone.json()["detail"]
    manifest.with_suffix(".gone").rename(manifest)
    onnx_bytes = client.get(f"/models/{model['model_id']}/files/model.onnx").content
    size = card["input"]["shape"][-1]
    out = ort.InferenceSession(onnx_bytes).run(None, {"images": np.zeros((1, 3, size, size), np.float32)})[0]
    assert out.shape == (1, 10)
    assert client.get(f"/models/{model['model_id']}/files/../../etc").status_code == 404


def test_bad_requests_explain_themselves(stack):
    runtime, client = stack
    cases = [
        ("train_supernet", {"dataset_id": "digits", "dataset_version": "v9"}, "no frozen version"),
        ("train_supernet", {"dataset_id": "digits", "dataset_version": "v1", "space": "resnet"}, "did you mean"),
        ("train_supernet", {"dataset_id": "digits", "dataset_version": "v1", "space": "yolo_det"}, "is for detect"),
        ("search", {"supernet_id": "nope", "budget_ms": 5}, "no supernet"),
        ("latency_table", {"space": "resnet_cls", "device": "pi5"}, "set TANGO_SERVICE_TOKEN"),
        ("finetune", {"supernet_id": "nope"}, "no supernet"),
    ]
    for kind, params, fragment in cases:
        resp = client.post("/jobs", json={"kind": kind, "params": params})
        assert resp.status_code == 422, (kind, resp.text)
        assert fragment in resp.json()["detail"], resp.json()["detail"]


def test_latency_table_import_rejects_another_space(stack):
    runtime, client = stack
    tables = client.get("/latency-tables").json()
    if not tables:
        pytest.skip("needs the table built by the end-to-end test")
    original = client.get(f"/latency-tables/{tables[0]['id']}").content
    supernet_id = client.get("/supernets").json()[0]["id"]
    # The same file imports cleanly for the supernet it was measured for ...
    assert client.post(f"/latency-tables?supernet_id={supernet_id}", content=original).status_code == 201
    # ... but a table of another space's options is refused, by name or by its block keys.
    table = json.loads(original)
    table["space_options"] = {**table["space_options"], "stem_width": 32}
    resp = client.post(f"/latency-tables?supernet_id={supernet_id}", content=json.dumps(table))
    assert resp.status_code == 422 and "measured for search space" in resp.json()["detail"]
    resp = client.post("/latency-tables", content=json.dumps(table))
    assert resp.status_code == 422 and "lacks" in resp.json()["detail"]
    assert client.post("/latency-tables", content=b"{}").status_code == 422
    assert client.post("/latency-tables", content=b"\xff\xfe").status_code == 422


def test_detection_supernet_to_exported_model(stack):
    runtime, client = stack
    shapes_version(runtime.store, n=40, size=96)
    trained = run(runtime, client, "train_supernet", {
        "dataset_id": "shapes", "dataset_version": "v1", "space_options": TINY_YOLO, "epochs": 1,
        "batch_size": 8, "lr": 0.002, "n_random": 0, "predictor_archs": 10, "device": "cpu"})
    assert 0.0 <= trained["val_largest"] <= 1.0
    row = client.get(f"/supernets/{trained['supernet_id']}").json()
    assert row["space"] == "yolo_det" and row["classes"] == ["circle", "square", "triangle"]
    smallest = client.get("/spaces").json()
    arch = next(s for s in smallest if s["name"] == "yolo_det")["smallest"] | {"resolution": 64}
    model = run(runtime, client, "finetune", {"supernet_id": trained["supernet_id"], "arch": arch, "epochs": 1,
                                              "batch_size": 8, "device": "cpu"})
    card = client.get(f"/models/{model['model_id']}/files/card.json").json()
    assert card["metric"]["name"] == "mAP50-95" and card["output"]["name"] == "output0"
    assert card["finetune"]["lr"] == LR_BY_TASK["detect"] != LR_BY_TASK["classify"]
    assert card["onnx"]["max_rel_diff_vs_torch"] < 1e-4
    onnx_bytes = client.get(f"/models/{model['model_id']}/files/model.onnx").content
    out = ort.InferenceSession(onnx_bytes).run(None, {"images": np.zeros((1, 3, 64, 64), np.float32)})[0]
    assert out.shape[:2] == (1, 4 + 3)

    # A detection budget search fine-tunes its finalists, one per input size, and keeps the best
    # fine-tuned one (refine_epochs; 1 here to keep the test short).
    table = run(runtime, client, "latency_table", {"supernet_id": trained["supernet_id"], "n_fit_networks": 4,
                                                   "rounds": 2})
    search = run(runtime, client, "search", {"supernet_id": trained["supernet_id"], "budget_ms": 1e5, "verify": False,
                                             "generations": 5, "population": 16, "refine_epochs": 1})
    assert table["space"] == "yolo_det" and search["refine_epochs"] == 1
    finalists = [c for c in search["shortlist"] if c["finetuned_metric"] is not None]
    space = get_search_space("yolo_det", **TINY_YOLO)
    assert sorted(space.input_size(c["arch"]) for c in finalists) == [64, 96]
    assert search["finetuned_metric"] == max(c["finetuned_metric"] for c in finalists)
    assert search["arch"] == max(finalists, key=lambda c: c["finetuned_metric"])["arch"]
    assert all(c["finetuned_metric"] >= 0 for c in finalists)


def test_search_refines_detection_by_default_and_refuses_refining_without_a_shortlist(stack):
    from autonn.jobs.search import REFINE_EPOCHS_BY_TASK, SearchParams, refine_epochs

    assert refine_epochs(SearchParams(supernet_id="s", budget_ms=1), "detect") == REFINE_EPOCHS_BY_TASK["detect"] > 0
    assert refine_epochs(SearchParams(supernet_id="s", budget_ms=1), "classify") == 0
    assert refine_epochs(SearchParams(supernet_id="s", budget_ms=1, rerank_per_size=0), "detect") == 0
    assert refine_epochs(SearchParams(supernet_id="s", budget_ms=1, refine_epochs=2), "classify") == 2
    _, client = stack
    resp = client.post("/jobs", json={"kind": "search", "params": {"supernet_id": "any", "budget_ms": 5,
                                                                   "rerank_per_size": 0, "refine_epochs": 3}})
    assert resp.status_code == 422 and resp.headers["content-type"] == "application/problem+json"
    assert "needs mode budget and rerank_per_size of at least 1" in resp.json()["detail"]
    resp = client.post("/jobs", json={"kind": "search", "params": {"supernet_id": "any", "mode": "front",
                                                                   "n_points": 10, "front_candidates": 5}})
    assert resp.status_code == 422 and "at least n_points (10)" in resp.json()["detail"]


@pytest.mark.parametrize(("task", "n_random"), [("classify", 3), ("detect", 2)])
def test_train_config_takes_task_defaults_unless_set(task, n_random):
    from autonn.jobs.train_supernet import TASK_DEFAULTS, train_config

    unset = train_config(params=TrainSupernetParams(dataset_id="d", dataset_version="v1"), task=task)
    assert (unset.n_random, unset.lr, unset.label_weight) == (n_random, TASK_DEFAULTS[task]["lr"],
                                                              TASK_DEFAULTS[task]["label_weight"])
    # An explicit value wins, 0 included (a falsy value is still a choice).
    chosen = train_config(params=TrainSupernetParams(dataset_id="d", dataset_version="v1", n_random=0, lr=0.01,
                                                     label_weight=0.0, epochs=7), task=task)
    assert (chosen.n_random, chosen.lr, chosen.label_weight, chosen.epochs) == (0, 0.01, 0.0, 7)
    assert unset.smallest_size == TASK_DEFAULTS[task]["smallest_size"]


def test_the_sandwich_size_rule_is_part_of_the_recipe_only_when_it_is_not_the_old_one():
    from autonn.jobs.train_supernet import recipe

    base = {"dataset_id": "d", "dataset_version": "v1"}
    lowest = recipe(params=TrainSupernetParams(**base, smallest_size="min"), task="classify")
    drawn = recipe(params=TrainSupernetParams(**base, smallest_size="random"), task="classify")
    # Supernets trained before the rule could be chosen were trained with "min": they stay reusable.
    assert "smallest_size" not in lowest and drawn == {**lowest, "smallest_size": "random"}
    with pytest.raises(ValueError):
        TrainSupernetParams(**base, smallest_size="max")


def test_a_budget_search_s_progress_never_runs_backwards():
    """Each round checks and fine-tunes again at the same stage of the bar; the job shows the
    furthest point reached, with the current stage's message."""
    from autonn.jobs.common import ForwardOnly

    seen = []

    class Ctx:
        job_id = "j1"

        def progress(self, fraction: float, message: str = "") -> None:
            seen.append((fraction, message))

    ctx = ForwardOnly(Ctx())
    for fraction, message in [(0.3, "checking"), (0.6, "fine-tuning"), (0.3, "checking again"), (0.9, "measuring")]:
        ctx.progress(fraction, message)
    assert seen == [(0.3, "checking"), (0.6, "fine-tuning"), (0.6, "checking again"), (0.9, "measuring")]
    assert ctx.job_id == "j1"
