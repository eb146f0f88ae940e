"""deploy_codegen's wiring: its tables and the job kinds its worker runs."""

from __future__ import annotations

from sqlalchemy import MetaData

from tango.jobs import JobKinds, jobs_table
from tango.runtime import ServiceRuntime
from tango.selftest import SelftestParams, selftest
from tango.settings import Settings

SERVICE = "deploy_codegen"
metadata = MetaData()
jobs = jobs_table(metadata, SERVICE)

kinds = JobKinds()
kinds.register("selftest", SelftestParams)(selftest)


def build_runtime(settings: Settings | None = None) -> ServiceRuntime:
    return ServiceRuntime(SERVICE, table=jobs, kinds=kinds, settings=settings)
