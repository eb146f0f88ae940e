"""labelling's wiring: its tables and the job kinds its worker runs."""

from __future__ import annotations

from labelling import exporter, importer, preannotate, selection
from labelling.records import metadata
from tango.jobs import JobKinds, jobs_table
from tango.runtime import ServiceRuntime
from tango.selftest import SelftestParams, selftest
from tango.settings import Settings

SERVICE = "labelling"
jobs = jobs_table(metadata, SERVICE)

kinds = JobKinds()
kinds.register("selftest", SelftestParams)(selftest)
kinds.register("import", importer.ImportParams, precheck=importer.precheck)(importer.run_import)
kinds.register("select", selection.SelectParams, precheck=selection.precheck)(selection.run_select)
kinds.register("preannotate", preannotate.PreannotateParams,
               precheck=preannotate.precheck)(preannotate.run_preannotate)
kinds.register("export", exporter.ExportParams, precheck=exporter.precheck)(exporter.run_export)


def build_runtime(settings: Settings | None = None) -> ServiceRuntime:
    return ServiceRuntime(SERVICE, table=jobs, kinds=kinds, settings=settings)
