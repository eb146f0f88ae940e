"""Build this package's TensorRT engine on the GPU that will run it (engines are per GPU and version).

    python build_engine.py [--output model.engine] [--workspace-gb 4] [--timing-cache timing.cache]

TensorRT 11: networks are strongly typed, so precision comes from the ONNX graph's own types, not
from builder flags. fp32 builds model.onnx; fp16 builds model_fp16.onnx (float16 weights and
activations, float32 inputs and outputs); int8 builds model_int8_qdq.onnx (explicit Q/DQ nodes,
quantized with the calibration data in calibration/). There are no --fp16/--int8 flags.
Generated and statically checked by Tango, not run: no TensorRT could be installed there.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import tensorrt as trt

ROOT = Path(__file__).resolve().parent


def build(*, onnx_path: Path, output: Path, input_name: str, shape: list[int], max_batch: int,
          dynamic_batch: bool, workspace_gb: float, timing_cache: Path | None) -> None:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # Strong typing is the only mode in TensorRT 11 (the flag is accepted and ignored there) and
    # must be asked for on 10.x; asking is right on both.
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise SystemExit(f"TensorRT could not parse {onnx_path.name}:\n{errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    profile = builder.create_optimization_profile()
    fixed = list(shape[1:])
    top = max_batch if dynamic_batch else shape[0]
    profile.set_shape(input_name, [1, *fixed], [shape[0], *fixed], [top, *fixed])
    config.add_optimization_profile(profile)
    cache = None
    if timing_cache is not None:
        data = timing_cache.read_bytes() if timing_cache.exists() else b""
        cache = config.create_timing_cache(data)
        config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise SystemExit("TensorRT failed to build the engine; the log above says why")
    output.write_bytes(bytes(serialized))
    if cache is not None:
        timing_cache.write_bytes(bytes(cache.serialize()))
    print(f"wrote {output} ({output.stat().st_size} bytes) with TensorRT {trt.__version__}")


def main(argv: list[str] | None = None) -> int:
    manifest = json.loads((ROOT / "manifest.json").read_text())
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", type=Path, default=ROOT / manifest["artifacts"]["engine_onnx"])
    parser.add_argument("--output", type=Path, default=ROOT / manifest["artifacts"]["engine"])
    parser.add_argument("--workspace-gb", type=float, default=4.0)
    parser.add_argument("--timing-cache", type=Path)
    args = parser.parse_args(argv)
    build(onnx_path=args.onnx, output=args.output, input_name=manifest["input"]["name"],
          shape=manifest["input"]["shape"], max_batch=manifest["max_batch"],
          dynamic_batch=manifest["dynamic_batch"], workspace_gb=args.workspace_gb,
          timing_cache=args.timing_cache)
    return 0


if __name__ == "__main__":
    sys.exit(main())
