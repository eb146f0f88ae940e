"""Pipeline stage state, persisted per run so a restarted worker or a retry continues where it stopped."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, insert, select, update

from tango.db import Database
from tango.jobs import utcnow

STAGES = ("import", "version", "supernet", "latency_table", "search", "finetune", "codegen", "report")
FINAL = ("succeeded", "skipped")


class Stages:
    def __init__(self, db: Database, table: Table):
        self.db, self.t = db, table

    def ensure(self, *, run_id: str, project_id: str) -> None:
        with self.db.begin() as conn:
            have = {r.name for r in conn.execute(select(self.t.c.name).where(self.t.c.run_id == run_id))}
            for position, name in enumerate(STAGES):
                if name not in have:
                    conn.execute(insert(self.t).values(run_id=run_id, project_id=project_id, position=position,
                                                       name=name, state="pending", log=""))

    def run_ids(self, project_id: str) -> list[str]:
        """The project's runs: every run has its stage rows from the moment it is created."""
        with self.db.begin() as conn:
            return list(conn.execute(select(self.t.c.run_id).where(self.t.c.project_id == project_id)
                                     .distinct()).scalars())

    def of_run(self, run_id: str) -> list[dict[str, Any]]:
        with self.db.begin() as conn:
            rows = conn.execute(select(self.t).where(self.t.c.run_id == run_id).order_by(self.t.c.position)).all()
        return [dict(r._mapping) for r in rows]

    def get(self, run_id: str, name: str) -> dict[str, Any]:
        with self.db.begin() as conn:
            row = conn.execute(select(self.t).where(self.t.c.run_id == run_id, self.t.c.name == name)).first()
        return dict(row._mapping)

    def _set(self, run_id: str, name: str, **values: Any) -> None:
        with self.db.begin() as conn:
            conn.execute(update(self.t).where(self.t.c.run_id == run_id, self.t.c.name == name).values(**values))

    def start(self, run_id: str, name: str) -> None:
        row = self.get(run_id, name)
        self._set(run_id, name, state="running", started_at=row["started_at"] or utcnow())

    def children(self, run_id: str, name: str) -> dict[str, str]:
        return dict(((self.get(run_id, name)["result"] or {}).get("children") or {}))

    def remember_child(self, run_id: str, name: str, *, key: str, service: str, job_id: str) -> None:
        """Record a stage's child job before waiting on it, so a restarted run rejoins it."""
        row = self.get(run_id, name)
        result = dict(row["result"] or {})
        result["children"] = {**(result.get("children") or {}), key: job_id}
        self._set(run_id, name, service=service, job_id=job_id, result=result)

    def finish(self, run_id: str, name: str, *, state: str, result: dict[str, Any] | None = None) -> None:
        self._set(run_id, name, state=state, result=result, finished_at=utcnow())

    def log(self, run_id: str, name: str, line: str) -> None:
        row = self.get(run_id, name)
        text = (row["log"] + line.rstrip() + "\n")[-20_000:]
        self._set(run_id, name, log=text)

    def carry_over(self, *, from_run: str, to_run: str) -> list[str]:
        """A retry keeps every stage the failed run finished (results, child jobs), up to the
        first one it did not: that stage and the rest run again."""
        kept = []
        for old in self.of_run(from_run):
            if old["state"] not in FINAL:
                break
            self._set(to_run, old["name"], state=old["state"], result=old["result"], service=old["service"],
                      job_id=old["job_id"], log=old["log"] + f"(carried over from run {from_run})\n",
                      started_at=old["started_at"], finished_at=old["finished_at"])
            kept.append(old["name"])
        return kept
