"""project_manager's device tables: device profiles, their profiling agents, measurement tasks."""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, DateTime, Float, ForeignKey, Integer, MetaData, String, Table, Text


def devices_table(metadata: MetaData) -> Table:
    return Table(
        "pm_devices", metadata,
        Column("id", String(32), primary_key=True),
        Column("name", String(64), nullable=False, unique=True),
        Column("description", Text, nullable=False, default=""),
        Column("cpu", String(256), nullable=False, default=""),
        Column("gpu", String(256), nullable=True),
        Column("accelerator", String(256), nullable=True),
        Column("memory_gb", Float, nullable=True),
        Column("os", String(128), nullable=False, default=""),
        Column("arch", String(32), nullable=False, default=""),
        Column("runtimes", JSON, nullable=False),
        Column("verified", JSON, nullable=False),  # runtime -> how (or whether) we could check it
        Column("seeded", Boolean, nullable=False, default=False),  # shipped with Tango: read-only
        Column("owner_id", String(32), nullable=True, index=True),  # null for seeded profiles
        Column("facts", JSON, nullable=True),  # what the device's agent (or the host) reports
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
    )


def device_agents_table(metadata: MetaData) -> Table:
    return Table(
        "pm_device_agents", metadata,
        Column("id", String(32), primary_key=True),
        Column("device_id", String(32), ForeignKey("pm_devices.id", ondelete="CASCADE"), nullable=False, index=True),
        Column("token_hash", String(64), nullable=False, unique=True),
        Column("created_by", String(32), nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("revoked", Boolean, nullable=False, default=False),
        Column("registered_at", DateTime(timezone=True), nullable=True),
        Column("last_seen_at", DateTime(timezone=True), nullable=True),
        Column("facts", JSON, nullable=True),
    )


def measurements_table(metadata: MetaData) -> Table:
    return Table(
        "pm_measurements", metadata,
        Column("id", String(64), primary_key=True),  # chosen by the caller, so a retried create is idempotent
        Column("device_id", String(32), ForeignKey("pm_devices.id", ondelete="CASCADE"), nullable=False, index=True),
        Column("state", String(16), nullable=False, index=True),  # queued | leased | succeeded | failed | cancelled
        Column("spec", JSON, nullable=False),
        Column("attempts", Integer, nullable=False, default=0),
        Column("lease_id", String(32), nullable=True),
        Column("lease_agent_id", String(32), nullable=True),
        Column("lease_expires_at", DateTime(timezone=True), nullable=True),
        Column("progress", Float, nullable=False, default=0.0),
        Column("message", Text, nullable=False, default=""),
        Column("results", JSON, nullable=True),
        Column("error", Text, nullable=True),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        Column("finished_at", DateTime(timezone=True), nullable=True),
    )


DEVICE_TABLE_FACTORIES = (devices_table, device_agents_table, measurements_table)
