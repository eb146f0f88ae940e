"""autonn's wiring: its tables and the job kinds its worker runs (queue `autonn`)."""

from __future__ import annotations

from functools import cached_property

from sqlalchemy import MetaData

from autonn.jobs import finetune, latency_table, search, train_supernet
from autonn.records import Records, latency_tables_table, models_table, supernets_table
from tango.jobs import JobKinds, jobs_table
from tango.runtime import ServiceRuntime
from tango.selftest import SelftestParams, selftest
from tango.settings import Settings

SERVICE = "autonn"
metadata = MetaData()
jobs = jobs_table(metadata, SERVICE)
TABLES = {"supernets": supernets_table(metadata), "latency_tables": latency_tables_table(metadata),
          "models": models_table(metadata)}

kinds = JobKinds()
kinds.register("selftest", SelftestParams)(selftest)
kinds.register("train_supernet", train_supernet.TrainSupernetParams,
               precheck=train_supernet.precheck_train)(train_supernet.train_supernet_job)
kinds.register("latency_table", latency_table.LatencyTableParams,
               precheck=latency_table.precheck_latency)(latency_table.latency_table_job)
kinds.register("search", search.SearchParams, precheck=search.precheck_search)(search.search_job)
kinds.register("finetune", finetune.FinetuneParams, precheck=finetune.precheck_finetune)(finetune.finetune_job)


class AutonnRuntime(ServiceRuntime):
    @cached_property
    def records(self) -> Records:
        return Records(self.db, TABLES)


def build_runtime(settings: Settings | None = None) -> AutonnRuntime:
    return AutonnRuntime(SERVICE, table=jobs, kinds=kinds, settings=settings)
