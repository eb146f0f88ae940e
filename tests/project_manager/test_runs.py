"""A project's runs: listed from its own stage rows, whatever else the server has run."""

from __future__ import annotations

from tests.reliability.test_hostile_inputs import service_client, sign_up


def test_runs_of_a_project_survive_many_runs_of_other_projects(tmp_path):
    with service_client("project_manager", tmp_path) as pm:
        ada = sign_up(pm, "ada")
        body = {"name": "ada's", "task": "classify", "classes": ["a", "b"], "dataset_id": "ada-data", "budget_ms": 5}
        pid = pm.post("/projects", headers=ada, json=body).json()["id"]
        run = pm.post(f"/projects/{pid}/runs", headers=ada)
        assert run.status_code == 202, run.text
        # Stage rows exist from creation, so a queued run already shows its plan.
        assert [s["state"] for s in run.json()["stages"]] == ["pending"] * 8
        jobs = pm.app.state.runtime.jobs
        for i in range(520):  # more pipeline jobs than one page of the jobs table, all newer than ada's
            jobs.create(kind="pipeline", params={"project_id": f"other{i % 7}", "user": "x"})
        listed = pm.get(f"/projects/{pid}/runs", headers=ada).json()
        assert [r["id"] for r in listed] == [run.json()["id"]]
        assert pm.get(f"/projects/{pid}/runs/{run.json()['id']}", headers=ada).status_code == 200
