"""deploy_codegen's own table: one row per package (model x package name), with its latest report."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Column, DateTime, Integer, MetaData, String, Table, Text, insert, select, update

from tango.db import Database
from tango.jobs import utcnow


def packages_table(metadata: MetaData) -> Table:
    return Table(
        "deploy_codegen_packages", metadata,
        Column("id", String(160), primary_key=True),  # "<model_id>/<package name>"
        Column("model_id", String(64), nullable=False, index=True),
        Column("name", String(80), nullable=False),
        Column("target", String(32), nullable=False),
        Column("options", JSON, nullable=False),
        Column("fingerprint", String(64), nullable=False),
        Column("key", Text, nullable=False),
        Column("sha256", String(64), nullable=False),
        Column("size", Integer, nullable=False),
        Column("manifest", JSON, nullable=False),
        Column("verified", String(16), nullable=True),  # run | static | failed; null: not yet verified
        Column("report", JSON, nullable=True),
        Column("report_key", Text, nullable=True),
        Column("job_id", String(32), nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
    )


# The service's MetaData (the jobs table joins it in deploy_codegen.runtime).
metadata = MetaData()


class Packages:
    def __init__(self, db: Database, table: Table):
        self.db, self.t = db, table

    @classmethod
    def of(cls, runtime) -> Packages:  # noqa: ANN001
        return cls(runtime.db, PACKAGES)

    def get(self, model_id: str, name: str) -> dict[str, Any] | None:
        with self.db.begin() as conn:
            row = conn.execute(select(self.t).where(self.t.c.id == f"{model_id}/{name}")).first()
        return dict(row._mapping) if row else None

    def for_model(self, model_id: str) -> list[dict[str, Any]]:
        with self.db.begin() as conn:
            rows = conn.execute(select(self.t).where(self.t.c.model_id == model_id)
                                .order_by(self.t.c.created_at, self.t.c.name)).all()
        return [dict(r._mapping) for r in rows]

    def find(self, model_id: str, name_or_target: str) -> dict[str, Any] | None:
        """By package name, else the newest package of that target."""
        row = self.get(model_id, name_or_target)
        if row is not None:
            return row
        rows = [r for r in self.for_model(model_id) if r["target"] == name_or_target]
        return rows[-1] if rows else None

    def put(self, **row: Any) -> dict[str, Any]:
        now = utcnow()
        row = {"id": f"{row['model_id']}/{row['name']}", "updated_at": now, **row}
        with self.db.begin() as conn:
            if conn.execute(select(self.t.c.id).where(self.t.c.id == row["id"])).first() is None:
                conn.execute(insert(self.t).values(created_at=now, **row))
            else:
                conn.execute(update(self.t).where(self.t.c.id == row["id"]).values(**row))
        return self.get(row["model_id"], row["name"])

    def set_report(self, model_id: str, name: str, *, report: dict[str, Any], report_key: str) -> None:
        with self.db.begin() as conn:
            conn.execute(update(self.t).where(self.t.c.id == f"{model_id}/{name}")
                         .values(report=report, report_key=report_key, verified=report["verified"],
                                 updated_at=utcnow()))


PACKAGES = packages_table(metadata)
