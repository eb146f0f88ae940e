"""What the pipeline asks of other services, from a project's choices."""

from __future__ import annotations

from autonn.jobs.train_supernet import TrainSupernetParams
from project_manager.pipeline_steps import codegen_params, supernet_params
from project_manager.projects import Training
from tango.agent import device_facts


def test_tvm_packages_for_another_device_are_compiled_for_what_its_agent_reported():
    v4 = {"cpu_flags": ["avx", "avx2", "fma", "bmi2", "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"]}
    params = codegen_params(model_id="m", targets=["onnxruntime", "tvm"], device="edge-box", facts=v4)
    assert params["options"] == {"tvm": {"cpu": "x86-64-v4"}} and params["verify"] is True
    # A device whose agent never reported: the baseline, which any x86-64 runs.
    assert codegen_params(model_id="m", targets=["tvm"], device="edge-box", facts=None)["options"] == {
        "tvm": {"cpu": "x86-64"}}
    # The host is where deploy_codegen compiles: its own CPU (deploy_codegen's default).
    host = codegen_params(model_id="m", targets=["tvm"], device="host", facts=device_facts(import_runtimes=False))
    assert "options" not in host
    assert "options" not in codegen_params(model_id="m", targets=["onnxruntime"], device="edge-box", facts=v4)


def test_the_supernet_job_gets_the_projects_knobs_and_autonn_defaults_the_rest():
    asked = supernet_params(dataset_id="d", version="v2", task="classify",
                            training=Training(supernet_epochs=12, n_random=1, lr=0.01))
    assert (asked["space"], asked["epochs"], asked["n_random"], asked["lr"]) == ("resnet_cls", 12, 1, 0.01)
    unset = supernet_params(dataset_id="d", version="v2", task="detect", training=Training())
    assert (unset["space"], unset["n_random"], unset["lr"]) == ("yolo_det", None, None)
    # What the pipeline sends is what autonn's job accepts (it forbids unknown fields).
    assert TrainSupernetParams(**asked).n_random == 1 and TrainSupernetParams(**unset).n_random is None
