"""Fixtures for deploy_codegen: a migrated runtime whose verification cache (wheelhouse, venvs) is
shared by the whole session, and tiny models written to its store the way autonn writes them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.factories import put_model_bundle, tiny_classifier, tiny_detector

CLASSES = ["circle", "square", "triangle"]


@pytest.fixture(scope="session")
def codegen_cache(tmp_path_factory) -> Path:
    # Venvs are keyed by their requirements.txt, so tests share them safely; building one costs seconds.
    return tmp_path_factory.mktemp("codegen-cache")


@pytest.fixture
def runtime(settings, codegen_cache):
    import torch

    from deploy_codegen.generate import cache_dir
    from deploy_codegen.runtime import build_runtime

    torch.set_num_threads(1)
    rt = build_runtime(settings)
    rt.migrate()
    cache_dir(settings).parent.mkdir(parents=True, exist_ok=True)
    cache_dir(settings).symlink_to(codegen_cache, target_is_directory=True)
    yield rt
    rt.db.dispose()


@pytest.fixture
def classifier_id(runtime) -> str:
    put_model_bundle(runtime.store, "tiny-cls", tiny_classifier(len(CLASSES)), task="classify",
                     classes=CLASSES, input_size=32)
    return "tiny-cls"


@pytest.fixture
def detector_id(runtime) -> str:
    put_model_bundle(runtime.store, "tiny-det", tiny_detector(len(CLASSES)), task="detect",
                     classes=CLASSES, input_size=64)
    return "tiny-det"


def run_job(runtime, kind: str, params: dict) -> dict:
    """Create and run a job in-process, as the worker would; returns the finished job."""
    from tango.queue import execute

    job = runtime.jobs.create(kind=kind, params=params)
    execute(runtime, job.id)
    return runtime.jobs.get(job.id)
