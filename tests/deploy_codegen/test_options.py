"""The targets x options table: what each target accepts, and refusals that say what would work."""

import pytest

from deploy_codegen.options import (
    TARGET_TABLE,
    OptionError,
    TargetOptions,
    package_name,
    resolve,
    resolve_all,
    table_public,
)
from deploy_codegen.targets import get_target, registered


def test_every_table_row_has_a_target_module_and_back():
    assert sorted(registered()) == sorted(TARGET_TABLE) == ["onnxruntime", "pytorch", "tensorrt", "tvm"]
    for name in TARGET_TABLE:
        assert get_target(name).name == name
    assert {row["target"] for row in table_public()} == set(TARGET_TABLE)


def test_defaults_are_filled_from_the_table():
    assert resolve("onnxruntime").devices == ["cpu"]
    assert resolve("tensorrt").devices == ["cuda"]  # its only device
    assert resolve("tvm", TargetOptions(devices=["cpu", "cuda"])).devices == ["cpu", "cuda"]


def test_int8_for_a_target_without_it_is_refused_with_a_suggestion():
    with pytest.raises(OptionError) as exc:
        resolve("tvm", TargetOptions(precision="int8"))
    msg = str(exc.value)
    assert "no precision 'int8'" in msg and "fp32" in msg and "tensorrt" in msg


def test_unknown_target_gets_did_you_mean():
    with pytest.raises(OptionError, match=r"did you mean 'onnxruntime'"):
        resolve_all(["onnxrt"], {})
    with pytest.raises(OptionError, match=r"did you mean 'tensorrt'"):
        resolve("tensortr")


@pytest.mark.parametrize(("target", "options", "fragment"), [
    ("tvm", {"dynamic_batch": True}, "fixed batch"),
    ("pytorch", {"precision": "fp16"}, "needs device 'cuda'"),
    ("onnxruntime", {"tune": True}, "tuning is offered by: tvm"),
    ("tvm", {"devices": ["cdua"]}, "did you mean 'cuda'"),
    ("tensorrt", {"devices": ["cpu"]}, "no device 'cpu'"),
])
def test_options_a_target_lacks(target, options, fragment):
    with pytest.raises(OptionError, match=fragment):
        resolve(target, TargetOptions(**options))


def test_options_for_a_target_not_requested():
    with pytest.raises(OptionError, match="not in targets"):
        resolve_all(["onnxruntime"], {"tvm": TargetOptions()})


def test_package_names_follow_device_profile_runtimes():
    assert package_name("tensorrt", resolve("tensorrt", TargetOptions(precision="fp16"))) == "tensorrt-fp16"
    assert package_name("tvm", resolve("tvm", TargetOptions(tune=True))) == "tvm-tuned"
    assert package_name("pytorch", resolve("pytorch", TargetOptions(devices=["cuda"], precision="fp16"))) == \
        "pytorch-fp16-cuda"
    assert package_name("onnxruntime", resolve("onnxruntime")) == "onnxruntime"
