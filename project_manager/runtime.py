"""project_manager's wiring: its tables and the job kinds its worker runs (queue `pipeline`)."""

from __future__ import annotations

from sqlalchemy import MetaData

from project_manager.system_check import SystemCheckParams, system_check
from tango.jobs import JobKinds, jobs_table
from tango.runtime import ServiceRuntime
from tango.selftest import SelftestParams, selftest
from tango.settings import Settings

SERVICE = "project_manager"
metadata = MetaData()
jobs = jobs_table(metadata, SERVICE)

kinds = JobKinds()
kinds.register("selftest", SelftestParams)(selftest)
kinds.register("system_check", SystemCheckParams)(system_check)


def build_runtime(settings: Settings | None = None) -> ServiceRuntime:
    return ServiceRuntime(SERVICE, table=jobs, kinds=kinds, settings=settings)
