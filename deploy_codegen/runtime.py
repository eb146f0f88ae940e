"""deploy_codegen's wiring: its tables and the job kinds its worker runs."""

from __future__ import annotations

from fastapi import HTTPException

from deploy_codegen.generate import GenerateParams, VerifyParams, generate, select_packages, verify
from deploy_codegen.options import OptionError, resolve_all
from deploy_codegen.records import Packages, metadata
from deploy_codegen.source import SourceError, load_source, source_exists
from deploy_codegen.tune import TuneParams, latest_tuning, tune
from tango.jobs import JobKinds, jobs_table
from tango.runtime import ServiceRuntime
from tango.selftest import SelftestParams, selftest
from tango.settings import Settings

SERVICE = "deploy_codegen"
jobs = jobs_table(metadata, SERVICE)


def _need_model(runtime: ServiceRuntime, model_id: str) -> None:
    if not source_exists(runtime.store, model_id):
        raise HTTPException(422, detail=f"no model {model_id!r} in the store (models/{model_id}/card.json); "
                                        "export one from autonn first")


def precheck_generate(runtime: ServiceRuntime, params: GenerateParams) -> None:
    # Refuse a doomed request now: unknown targets, options a target lacks, a missing model.
    try:
        options = resolve_all(params.targets, params.options)
    except OptionError as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    if "tvm" in options:
        _refuse_unknown_cpu(options["tvm"].cpu)
    _need_model(runtime, params.model_id)
    if any(o.tune for o in options.values()):
        try:
            source = load_source(runtime.store, params.model_id)
        except SourceError as exc:
            raise HTTPException(422, detail=str(exc)) from exc
        for target, opts in options.items():
            if opts.tune and latest_tuning(runtime.store, source, opts) is None:
                raise HTTPException(422, detail=f"{target}: tune is true but model {params.model_id!r} has no "
                                                f"tuning database for num_cores {opts.num_cores or 'default'} "
                                                f"and cpu {opts.cpu or 'default'}; "
                                                f"run a `tune` job with model_id {params.model_id!r} first")


def precheck_verify(runtime: ServiceRuntime, params: VerifyParams) -> None:
    try:
        select_packages(Packages.of(runtime), params.model_id, params.packages)
    except LookupError as exc:
        raise HTTPException(422, detail=str(exc).strip("'\"")) from exc


def _refuse_unknown_cpu(cpu: str | None) -> None:
    if cpu is None:
        return
    from deploy_codegen.targets.tvm import resolve_cpu

    try:
        resolve_cpu(cpu)
    except OptionError as exc:
        raise HTTPException(422, detail=str(exc)) from exc


def precheck_tune(runtime: ServiceRuntime, params: TuneParams) -> None:
    _refuse_unknown_cpu(params.cpu)
    _need_model(runtime, params.model_id)


kinds = JobKinds()
kinds.register("selftest", SelftestParams)(selftest)
kinds.register("generate", GenerateParams, precheck=precheck_generate)(generate)
kinds.register("verify", VerifyParams, precheck=precheck_verify)(verify)
kinds.register("tune", TuneParams, precheck=precheck_tune)(tune)


def build_runtime(settings: Settings | None = None) -> ServiceRuntime:
    return ServiceRuntime(SERVICE, table=jobs, kinds=kinds, settings=settings)
