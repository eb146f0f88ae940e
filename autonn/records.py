"""autonn's own tables: trained supernets, latency tables and exported models."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Float, MetaData, String, Table, Text, insert, select, update

from tango.db import Database
from tango.jobs import utcnow


def options_hash(space: str, options: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps([space, options], sort_keys=True).encode()).hexdigest()[:16]


def supernets_table(metadata: MetaData) -> Table:
    return Table(
        "autonn_supernets", metadata,
        Column("id", String(32), primary_key=True),  # the train_supernet job's id
        Column("space", String(64), nullable=False),
        Column("space_options", JSON, nullable=False),
        Column("options_hash", String(16), nullable=False, index=True),
        Column("dataset_id", String(64), nullable=False),
        Column("dataset_version", String(64), nullable=False),
        Column("task", String(16), nullable=False),
        Column("classes", JSON, nullable=False),
        Column("state", String(16), nullable=False),  # training | ready
        Column("weights_key", Text, nullable=True),
        Column("predictor_key", Text, nullable=True),
        Column("metrics", JSON, nullable=True),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
    )


def latency_tables_table(metadata: MetaData) -> Table:
    return Table(
        "autonn_latency_tables", metadata,
        Column("id", String(32), primary_key=True),
        Column("space", String(64), nullable=False),
        Column("options_hash", String(16), nullable=False, index=True),
        Column("device", String(128), nullable=False, index=True),
        Column("runtime", String(64), nullable=False),
        Column("key", Text, nullable=False),
        Column("noise_floor", Float, nullable=True),
        Column("report", JSON, nullable=True),
        Column("created_at", DateTime(timezone=True), nullable=False),
    )


def models_table(metadata: MetaData) -> Table:
    return Table(
        "autonn_models", metadata,
        Column("id", String(32), primary_key=True),  # the finetune job's id
        Column("supernet_id", String(32), nullable=False, index=True),
        Column("arch", JSON, nullable=False),
        Column("device", String(128), nullable=True),
        Column("budget_ms", Float, nullable=True),
        Column("metric", Float, nullable=True),
        Column("files", JSON, nullable=False),
        Column("card", JSON, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
    )


class Records:
    """Reads and writes of autonn's tables. Inserts are keyed by the job id that produced the row,
    so a redelivered job that already wrote its row does not write it twice."""

    def __init__(self, db: Database, tables: dict[str, Table]):
        self.db, self.t = db, tables

    def _put(self, table: str, row: dict[str, Any]) -> dict[str, Any]:
        t = self.t[table]
        with self.db.begin() as conn:
            if conn.execute(select(t.c.id).where(t.c.id == row["id"])).first() is None:
                conn.execute(insert(t).values(**row))
            else:
                conn.execute(update(t).where(t.c.id == row["id"]).values(**row))
        return self.get(table, row["id"])

    def get(self, table: str, row_id: str) -> dict[str, Any] | None:
        t = self.t[table]
        with self.db.begin() as conn:
            row = conn.execute(select(t).where(t.c.id == row_id)).first()
        return dict(row._mapping) if row else None

    def list(self, table: str, **where: Any) -> list[dict[str, Any]]:
        t = self.t[table]
        query = select(t)
        for column, value in where.items():
            if value is not None:
                query = query.where(t.c[column] == value)
        with self.db.begin() as conn:
            rows = conn.execute(query.order_by(t.c.created_at.desc())).all()
        return [dict(r._mapping) for r in rows]

    def put_supernet(self, **row: Any) -> dict[str, Any]:
        now = utcnow()
        existing = self.get("supernets", row["id"])
        row = {"created_at": existing["created_at"] if existing else now, "updated_at": now,
               "options_hash": options_hash(row["space"], row["space_options"]), **row}
        return self._put("supernets", row)

    def put_latency_table(self, **row: Any) -> dict[str, Any]:
        return self._put("latency_tables", {"created_at": utcnow(), **row})

    def put_model(self, **row: Any) -> dict[str, Any]:
        return self._put("models", {"created_at": utcnow(), **row})

    def reusable_supernet(self, *, space: str, options: dict, dataset_id: str, version: str,
                          recipe: dict[str, Any]) -> dict | None:
        """A ready supernet of this space on this dataset version, trained with this recipe (rows
        from before recipes were recorded have none, so they are not reused)."""
        rows = self.list("supernets", options_hash=options_hash(space, options), dataset_id=dataset_id,
                         dataset_version=version, state="ready")
        return next((r for r in rows if (r.get("metrics") or {}).get("recipe") == recipe), None)

    def latest_latency_table(self, *, space: str, options: dict, device: str) -> dict | None:
        rows = self.list("latency_tables", options_hash=options_hash(space, options), device=device)
        return rows[0] if rows else None
