"""project_manager's tables: users and tokens, projects and their members, pipeline stages."""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, DateTime, Float, ForeignKey, Integer, MetaData, String, Table, Text, UniqueConstraint


def users_table(metadata: MetaData) -> Table:
    return Table(
        "pm_users", metadata,
        Column("id", String(32), primary_key=True),
        Column("username", String(64), nullable=False, unique=True),
        Column("password_hash", Text, nullable=False),
        Column("is_admin", Boolean, nullable=False, default=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
    )


def tokens_table(metadata: MetaData) -> Table:
    return Table(
        "pm_tokens", metadata,
        Column("id", String(32), primary_key=True),
        Column("user_id", String(32), ForeignKey("pm_users.id", ondelete="CASCADE"), nullable=False, index=True),
        Column("token_hash", String(64), nullable=False, unique=True),
        Column("name", String(128), nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("last_used_at", DateTime(timezone=True), nullable=True),
        Column("revoked", Boolean, nullable=False, default=False),
    )


def projects_table(metadata: MetaData) -> Table:
    return Table(
        "pm_projects", metadata,
        Column("id", String(32), primary_key=True),
        Column("name", String(128), nullable=False),
        Column("owner_id", String(32), ForeignKey("pm_users.id"), nullable=False, index=True),
        Column("task", String(16), nullable=False),
        Column("classes", JSON, nullable=False),
        Column("dataset_id", String(64), nullable=True),
        Column("dataset_version", String(64), nullable=True),
        Column("device", String(128), nullable=False),
        Column("budget_ms", Float, nullable=False),
        Column("accuracy_floor", Float, nullable=True),
        Column("size_ceiling_mb", Float, nullable=True),
        Column("targets", JSON, nullable=False),
        Column("training", JSON, nullable=False),  # epochs, search options: the pipeline's knobs
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
    )


def members_table(metadata: MetaData) -> Table:
    return Table(
        "pm_members", metadata,
        Column("project_id", String(32), ForeignKey("pm_projects.id", ondelete="CASCADE"), primary_key=True),
        Column("user_id", String(32), ForeignKey("pm_users.id", ondelete="CASCADE"), primary_key=True),
        Column("role", String(16), nullable=False),  # owner | viewer
    )


def stages_table(metadata: MetaData) -> Table:
    return Table(
        "pm_stages", metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("run_id", String(32), nullable=False, index=True),  # the pipeline job's id
        Column("project_id", String(32), nullable=False, index=True),
        Column("position", Integer, nullable=False),
        Column("name", String(64), nullable=False),
        Column("state", String(16), nullable=False),  # pending | running | succeeded | failed | cancelled | skipped
        Column("service", String(32), nullable=True),
        Column("job_id", String(32), nullable=True),
        Column("result", JSON, nullable=True),
        Column("log", Text, nullable=False, default=""),
        Column("started_at", DateTime(timezone=True), nullable=True),
        Column("finished_at", DateTime(timezone=True), nullable=True),
        UniqueConstraint("run_id", "name", name="uq_pm_stages_run_name"),
    )


TABLE_FACTORIES = (users_table, tokens_table, projects_table, members_table, stages_table)
