"""The profiling agent's own parts: what it agrees to run, how it times, what it reports."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tango.agent import (ISA_FLAGS, ModelRefused, _input_for, check_onnx, device_facts, interleave, make_session,
                         noise_floor, x86_level)
from tests.factories import onnx_colour_classifier


def relu_model(*, domain: str = "", op: str = "Relu", functions=(), external: bool = False) -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    w = numpy_helper.from_array(np.ones((1, 4), np.float32), "w")
    if external:
        w.data_location = TensorProto.EXTERNAL
        w.ClearField("raw_data")
        entry = w.external_data.add()
        entry.key, entry.value = "location", "weights.bin"
    nodes = [helper.make_node("Add", ["x", "w"], ["h"]), helper.make_node(op, ["h"], ["y"], domain=domain)]
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w]), opset_imports=opsets,
                              functions=list(functions), ir_version=8)
    return model.SerializeToString()


def test_it_runs_plain_onnx_and_refuses_anything_else(tmp_path, monkeypatch):
    # The external file exists, so ONNX's checker passes it: the agent's own check must refuse.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights.bin").write_bytes(np.ones(4, np.float32).tobytes())
    data, _ = onnx_colour_classifier()
    assert check_onnx(data).graph.node
    assert check_onnx(relu_model()).graph.node[1].op_type == "Relu"
    refusals = {
        b"": "1 byte to",
        b"#!/bin/sh\nrm -rf /\n": "not a valid ONNX model",
        b"\x80\x04\x95 pickle": "not a valid ONNX model",
        relu_model(domain="com.microsoft", op="FusedGemm"): "com.microsoft",
        relu_model(domain="ai.onnx.contrib", op="PyOp"): "ai.onnx.contrib",
        relu_model(external=True): "external data",
    }
    for blob, fragment in refusals.items():
        with pytest.raises(ModelRefused, match=fragment):
            check_onnx(blob)
    func = helper.make_function("custom", "Twice", ["a"], ["b"], [helper.make_node("Add", ["a", "a"], ["b"])],
                                [helper.make_opsetid("", 17)])
    with pytest.raises(ModelRefused, match="own functions"):
        check_onnx(relu_model(functions=[func]))  # defined, even if never called


def test_input_must_fit_the_model():
    data, _ = onnx_colour_classifier(size=16)
    session = make_session(data, threads=1, runtime="onnxruntime-cpu")
    feed = _input_for(session, [1, 3, 16, 16])
    assert feed["images"].shape == (1, 3, 16, 16) and feed["images"].dtype == np.float32
    assert session.run(None, feed)[0].shape == (1, 3)
    with pytest.raises(ModelRefused, match="does not fit"):
        _input_for(session, [1, 3, 32, 32])


def test_rounds_are_interleaved_shuffled_and_seeded():
    log: list[str] = []

    def timer(name: str):
        def run(n: int) -> float:
            log.extend([name] * n)
            return float(len(name))
        return run

    names = [f"m{i}" for i in range(6)]
    rounds_seen: list[int] = []
    out = interleave({n: timer(n) for n in names}, rounds=4, runs_per_round=3, warmup=2, seed=7,
                     on_round=lambda done, total: rounds_seen.append(done))
    assert rounds_seen == [1, 2, 3, 4] and all(len(out[n]) == 4 for n in names)
    timed = log[2 * len(names):]
    orders = [tuple(timed[i * 18:(i + 1) * 18][::3]) for i in range(4)]
    assert all(sorted(o) == names for o in orders) and len(set(orders)) > 1
    log.clear()
    interleave({n: timer(n) for n in names}, rounds=4, runs_per_round=3, warmup=2, seed=7)
    assert [tuple(log[2 * len(names):][i * 18:(i + 1) * 18][::3]) for i in range(4)] == orders  # same seed, same order
    assert noise_floor({"a": [1.0, 1.0, 1.0], "b": [1.0, 2.0, 3.0]}) == pytest.approx(0.25)


def test_device_facts_describe_this_machine():
    facts = device_facts(max_threads=1)
    assert facts["cores"] >= 1 and facts["arch"] and facts["cpu"] and facts["max_threads"] == 1
    assert "onnxruntime-cpu" in facts["timing_runtimes"] and facts["versions"]["onnxruntime"]
    cheap = device_facts(import_runtimes=False)
    assert "onnxruntime" not in cheap["versions"] and "onnxruntime-cpu" in cheap["runtimes"]
    onnx.checker.check_model(onnx.load_from_string(onnx_colour_classifier()[0]))


def test_x86_level_is_the_highest_portable_level_a_device_reported():
    facts = device_facts(import_runtimes=False)
    assert set(facts["cpu_flags"]) <= set(ISA_FLAGS)
    v3 = ["sse4_2", "popcnt", "avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "movbe"]
    assert x86_level({"cpu_flags": v3}) == "x86-64-v3"
    assert x86_level({"cpu_flags": [*v3, "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"]}) == "x86-64-v4"
    assert x86_level({"cpu_flags": [*v3, "avx512f"]}) == "x86-64-v3"  # AVX-512F alone is not v4
    assert x86_level({"cpu_flags": ["sse4_2", "popcnt", "avx"]}) == "x86-64-v2"
    # An agent that reported no flags (an older one) or no facts yet: the baseline, which runs anywhere.
    assert x86_level({"cpu": "x"}) == x86_level(None) == "x86-64"
