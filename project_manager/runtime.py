"""project_manager's wiring: its tables and the job kinds its worker runs (queue `pipeline`)."""

from __future__ import annotations

from functools import cached_property

from sqlalchemy import MetaData

from project_manager.accounts import Accounts
from project_manager.device_tables import device_agents_table, devices_table, measurements_table
from project_manager.devices import Devices
from project_manager.measurements import Measurements
from project_manager.pipeline import PipelineParams, precheck_pipeline, run_pipeline
from project_manager.projects import Projects
from project_manager.stages import Stages
from project_manager.system_check import SystemCheckParams, system_check
from project_manager.tables import members_table, projects_table, stages_table, tokens_table, users_table
from tango.jobs import JobKinds, jobs_table
from tango.runtime import ServiceRuntime
from tango.selftest import SelftestParams, selftest
from tango.settings import Settings

SERVICE = "project_manager"
metadata = MetaData()
jobs = jobs_table(metadata, SERVICE)
TABLES = {"users": users_table(metadata), "tokens": tokens_table(metadata), "projects": projects_table(metadata),
          "members": members_table(metadata), "stages": stages_table(metadata)}
DEVICE_TABLES = {"devices": devices_table(metadata), "device_agents": device_agents_table(metadata),
                 "measurements": measurements_table(metadata)}

kinds = JobKinds()
kinds.register("selftest", SelftestParams)(selftest)
kinds.register("system_check", SystemCheckParams)(system_check)
kinds.register("pipeline", PipelineParams, precheck=precheck_pipeline)(run_pipeline)


class ProjectManagerRuntime(ServiceRuntime):
    @cached_property
    def accounts(self) -> Accounts:
        return Accounts(self.db, TABLES["users"], TABLES["tokens"], TABLES["members"])

    @cached_property
    def projects(self) -> Projects:
        return Projects(self.db, TABLES["projects"], TABLES["members"])

    @cached_property
    def stages(self) -> Stages:
        return Stages(self.db, TABLES["stages"])

    @cached_property
    def devices(self) -> Devices:
        return Devices(self.db, DEVICE_TABLES, settings=self.settings)

    @cached_property
    def measurements(self) -> Measurements:
        return Measurements(self.devices, DEVICE_TABLES["measurements"], self.store)


def build_runtime(settings: Settings | None = None) -> ProjectManagerRuntime:
    return ProjectManagerRuntime(SERVICE, table=jobs, kinds=kinds, settings=settings)
