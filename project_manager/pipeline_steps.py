"""The stages of a pipeline run, in order; each returns what later stages and the report need."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from project_manager.pipeline import StageFailed, dataset_id_for
from tango.client import ServiceError

if TYPE_CHECKING:
    from project_manager.pipeline import Run
    from project_manager.projects import Training

SPACES = {"classify": "resnet_cls", "detect": "yolo_det"}


def import_(run: Run) -> dict[str, Any]:
    dataset_id = dataset_id_for(run.project)
    for job_id in run.params.import_job_ids:
        job = run.clients["labelling"].wait_job(job_id, timeout=24 * 3600)
        if job.state.value != "succeeded":
            raise StageFailed(f"import job {job_id} {job.state.value}: {job.error}")
        run.say("import", f"import job {job_id}: {job.result.get('summary', job.result) if job.result else ''}")
    try:
        dataset = run.clients["labelling"].request("GET", f"/datasets/{dataset_id}")
    except ServiceError as exc:
        raise StageFailed(f"the project's dataset {dataset_id} is not in the labelling service; upload images "
                          "to the project first") from exc
    labelled = dataset.get("labelled", dataset.get("counts", {}).get("labelled"))
    if not labelled:
        raise StageFailed(f"dataset {dataset_id} has no labelled images yet: label some (or import labels) first")
    return {"dataset_id": dataset_id, "dataset": dataset}


globals()["import"] = import_  # "import" is the stage's name but a keyword in Python


def version(run: Run) -> dict[str, Any]:
    dataset_id = dataset_id_for(run.project)
    labelling = run.clients["labelling"]
    if run.project.dataset_version:
        found = labelling.request("GET", f"/datasets/{dataset_id}/versions/{run.project.dataset_version}")
        run.say("version", f"using frozen version {run.project.dataset_version}", 1.0)
        return {"dataset_id": dataset_id, "version": found["version"], "frozen": found}
    frozen = labelling.request("POST", f"/datasets/{dataset_id}/versions", json={"seed": 0})
    run.say("version", f"froze version {frozen['version']}", 1.0)
    return {"dataset_id": dataset_id, "version": frozen["version"], "frozen": frozen}


def supernet_params(*, dataset_id: str, version: str, task: str, training: Training) -> dict[str, Any]:
    """The train_supernet job a project asks for; knobs left unset (None) take autonn's task defaults."""
    t = training
    return {"dataset_id": dataset_id, "dataset_version": version, "space": SPACES[task],
            "space_options": t.space_options, "epochs": t.supernet_epochs, "batch_size": t.batch_size, "lr": t.lr,
            "n_random": t.n_random, "predictor_archs": t.predictor_archs, "device": t.device_compute, "reuse": True}


def supernet(run: Run) -> dict[str, Any]:
    v = run.results["version"]
    return run.child("supernet", "autonn", "train_supernet", supernet_params(
        dataset_id=v["dataset_id"], version=v["version"], task=run.project.task, training=run.project.training))[1]


def latency_table(run: Run) -> dict[str, Any]:
    from datetime import UTC, datetime, timedelta

    supernet_id = run.results["supernet"]["supernet_id"]
    device, max_age = run.project.device, run.project.training.latency_max_age_days
    tables = run.clients["autonn"].request("GET", "/latency-tables",
                                           params={"supernet_id": supernet_id, "device": device})
    for row in tables:
        created = datetime.fromisoformat(str(row["created_at"]).replace("Z", "+00:00"))
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        if datetime.now(UTC) - created < timedelta(days=max_age):
            run.say("latency_table", f"reusing latency table {row['id']} of {created:%Y-%m-%d}", 1.0)
            return {"latency_table_id": row["id"], "reused": True, "noise_floor": row["noise_floor"]}
    return run.child("latency_table", "autonn", "latency_table", {
        "supernet_id": supernet_id, "device": device, "n_fit_networks": run.project.training.latency_networks})[1]


def search(run: Run) -> dict[str, Any]:
    supernet_id = run.results["supernet"]["supernet_id"]
    table_id = run.results["latency_table"]["latency_table_id"]
    common = {"supernet_id": supernet_id, "device": run.project.device, "latency_table_id": table_id}
    job_id, chosen = run.child("search", "autonn", "search", {**common, "budget_ms": run.project.budget_ms},
                               key="budget")
    _, front = run.child("search", "autonn", "search", {**common, "mode": "front", "n_points": 12, "verify": False},
                         key="front")
    return {**chosen, "search_job_id": job_id, "front": front.get("front", [])}


def finetune(run: Run) -> dict[str, Any]:
    t = run.project.training
    _, result = run.child("finetune", "autonn", "finetune", {
        "supernet_id": run.results["supernet"]["supernet_id"], "search_job_id": run.results["search"]["search_job_id"],
        "epochs": t.finetune_epochs, "batch_size": t.batch_size, "device": t.device_compute})
    metric = result["metric"]["val"]
    floor, ceiling = run.project.accuracy_floor, run.project.size_ceiling_mb
    if floor is not None and metric < floor:
        raise StageFailed(f"the best model within {run.project.budget_ms:g} ms reaches {metric:.1%} "
                          f"({result['metric']['name']}), below your floor of {floor:.1%}: raise the budget, "
                          "add or label more data, or lower the floor")
    size_mb = result["params"] * 4 / 1e6
    if ceiling is not None and size_mb > ceiling:
        raise StageFailed(f"the chosen model has {result['params']:,} parameters ({size_mb:.2f} MB in fp32), over "
                          f"your ceiling of {ceiling:g} MB: lower the latency budget or raise the ceiling")
    return result


def codegen_params(*, model_id: str, targets: list[str], device: str, facts: dict[str, Any] | None) -> dict[str, Any]:
    params: dict[str, Any] = {"model_id": model_id, "targets": targets, "verify": True}
    if "tvm" in targets and device != "host":
        # TVM compiles for a named CPU (by default deploy_codegen's own machine's): for another
        # device, the highest portable x86-64 level its agent reported, so the kernels run there.
        from tango.agent import x86_level

        params["options"] = {"tvm": {"cpu": x86_level(facts)}}
    return params


def codegen(run: Run) -> dict[str, Any]:
    model_id = run.results["finetune"]["model_id"]
    targets, device = run.project.targets, run.project.device
    facts = run.runtime.devices.get(device).facts if "tvm" in targets and device != "host" else None
    _, result = run.child("codegen", "deploy_codegen", "generate",
                          codegen_params(model_id=model_id, targets=targets, device=device, facts=facts))
    packages = run.clients["deploy_codegen"].request("GET", f"/packages/{model_id}")
    return {"model_id": model_id, "job": result, "packages": packages["packages"],
            "table_markdown": packages.get("table_markdown", "")}


def report(run: Run) -> dict[str, Any]:
    from project_manager.report import build_report

    return build_report(run)
