"""`tango agent`: the profiling agent that runs on a target device and times models for Tango.

It registers with project_manager using the device's token, leases measurement tasks, downloads
each task's ONNX models through project_manager, times them and posts the per-round figures back.
It needs only onnxruntime, onnx, numpy and httpx (the `[agent]` extra); it imports nothing from the
services, so it installs on a board that could never run them.

Timing mirrors `autonn.latency` (keep the two in step): every model gets `warmup` runs, then each
round times every model once (the median of `runs_per_round` runs) in a freshly shuffled, seeded
order, with the garbage collector off, so drift on the device hits all models alike. A model's
figure is the median of its rounds; noise is (p75 - p25) / median of its rounds.

On a GPU (runtime onnxruntime-cuda, when ONNX Runtime has its CUDA provider) the same host clock
is used: `run()` returns only once the outputs are back on the host, so each timed run spans the
device's whole work. Not tried here: no GPU was reachable while this was written.

It runs nothing but the models it is sent: each must parse as an ONNX ModelProto that passes the
checker, uses only the standard operator domain, has no model-local functions and no external data,
and is loaded by ONNX Runtime with no custom-op library. Nothing is unpickled or executed.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import os
import platform
import random
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

AGENT_VERSION = "1"
STANDARD_DOMAINS = frozenset({"", "ai.onnx"})
MAX_MODEL_BYTES = 512 << 20
MAX_BACKOFF_SECONDS = 30.0
log = logging.getLogger("tango.agent")
Timer = Callable[[int], float]  # runs the model n times, returns the median ms


class Unauthorized(Exception):
    """The server refused the device token: retrying cannot help."""


class GaveUp(Exception):
    """The server stayed unreachable for longer than the agent was told to keep trying."""


class LeaseLost(Exception):
    """The task was given to another agent (our lease expired) or ended; stop working on it."""


class ModelRefused(ValueError):
    """A model the agent will not run; the message says why."""


# --- what this device is -------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# x86 extensions compiled code may rely on (/proc/cpuinfo names), and LLVM's portable x86-64
# levels by what they require: a TVM package for a device is compiled for the highest it has.
ISA_FLAGS = ("sse4_2", "popcnt", "avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "movbe", "avx512f", "avx512bw",
             "avx512cd", "avx512dq", "avx512vl", "avx512_vnni", "avx512_bf16")
X86_LEVELS = (("x86-64-v4", {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl", "avx2", "fma", "bmi2"}),
              ("x86-64-v3", {"avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "movbe"}),
              ("x86-64-v2", {"sse4_2", "popcnt"}))


def _cpu_flags() -> list[str]:
    try:
        line = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    except OSError:
        return []
    have = set(line.partition(":")[2].split())
    return [f for f in ISA_FLAGS if f in have]


def x86_level(facts: dict[str, Any] | None) -> str:
    """The LLVM CPU a device's x86 code may be compiled for, from its reported flags: the highest
    portable x86-64 level it has; plain x86-64 when it reported none (an older agent)."""
    flags = set((facts or {}).get("cpu_flags") or [])
    return next((name for name, need in X86_LEVELS if need <= flags), "x86-64")


def _memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _gpus() -> list[str]:
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()][:16]


def _board() -> str | None:
    try:  # Raspberry Pi, Jetson and most ARM boards name themselves here
        return Path("/proc/device-tree/model").read_text().strip("\x00 \n") or None
    except OSError:
        return None


def device_facts(*, import_runtimes: bool = True, max_threads: int | None = None) -> dict[str, Any]:
    """CPU, cores, memory, OS/arch, GPUs and runtimes of this machine. `import_runtimes=False`
    only looks for the packages (no import, no GPU probe): cheap enough for a web service."""
    found = {name: importlib.util.find_spec(name) is not None for name in ("onnxruntime", "torch", "tvm")}
    runtimes, timing, versions = [], [], {"python": platform.python_version()}
    if found["onnxruntime"]:
        runtimes.append("onnxruntime-cpu")
        timing.append("onnxruntime-cpu")
        if import_runtimes:
            import onnxruntime as ort

            versions["onnxruntime"] = ort.__version__
            if "CUDAExecutionProvider" in ort.get_available_providers():
                runtimes.append("onnxruntime-cuda")
                timing.append("onnxruntime-cuda")
    if found["torch"]:
        runtimes.append("pytorch-cpu")
    if found["tvm"]:
        runtimes.append("tvm-llvm")
    gpus = _gpus() if import_runtimes else []
    if gpus and found["torch"]:
        runtimes.append("pytorch-cuda")
    return {"cpu": _cpu_model(), "cpu_flags": _cpu_flags(), "cores": os.cpu_count() or 1, "memory_gb": _memory_gb(),
            "os": f"{platform.system()} {platform.release()}", "arch": platform.machine(), "board": _board(),
            "gpus": gpus, "runtimes": runtimes, "timing_runtimes": timing,
            "max_threads": max_threads or os.cpu_count() or 1, "versions": versions}


# --- the models it is sent -----------------------------------------------------------------------
def _walk_graph(graph: Any, where: str) -> None:
    from onnx import AttributeProto, TensorProto

    def tensor(t: Any, what: str) -> None:
        if t.data_location == TensorProto.EXTERNAL or t.external_data:
            raise ModelRefused(f"{what} refers to external data; only self-contained models are run")

    for t in graph.initializer:
        tensor(t, f"initializer {t.name!r} in {where}")
    for t in graph.sparse_initializer:
        tensor(t.values, f"sparse initializer in {where}")
    for node in graph.node:
        if node.domain not in STANDARD_DOMAINS:
            raise ModelRefused(f"node {node.name or node.op_type!r} in {where} uses operator domain "
                               f"{node.domain!r}; only the standard ONNX operators are run")
        for attr in node.attribute:
            if attr.type == AttributeProto.GRAPH:
                _walk_graph(attr.g, f"{where}/{node.op_type}")
            for g in attr.graphs:
                _walk_graph(g, f"{where}/{node.op_type}")
            if attr.type == AttributeProto.TENSOR:
                tensor(attr.t, f"attribute of {node.op_type} in {where}")
            for t in attr.tensors:
                tensor(t, f"attribute of {node.op_type} in {where}")


def check_onnx(data: bytes) -> Any:
    """The ModelProto in `data`, or ModelRefused: not ONNX, custom ops, functions, external data."""
    import onnx
    from google.protobuf.message import DecodeError

    if not data or len(data) > MAX_MODEL_BYTES:
        raise ModelRefused(f"a model must be 1 byte to {MAX_MODEL_BYTES >> 20} MiB, not {len(data)} bytes")
    try:
        model = onnx.load_model_from_string(data)
        onnx.checker.check_model(model)
    except (DecodeError, ValueError, RuntimeError, onnx.checker.ValidationError) as exc:
        raise ModelRefused(f"not a valid ONNX model: {str(exc).splitlines()[0][:300]}") from None
    for imp in model.opset_import:
        if imp.domain not in STANDARD_DOMAINS:
            raise ModelRefused(f"the model imports operator set {imp.domain!r}; only the standard one is run")
    if model.functions:
        raise ModelRefused("the model defines its own functions; only plain graphs of standard operators are run")
    _walk_graph(model.graph, "the graph")
    return model


# --- timing (mirrors autonn.latency) ----------------------------------------------------------------
def make_session(data: bytes, *, threads: int, runtime: str) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.load_model_format", "ONNX")  # never the ORT flatbuffer format
    # As autonn.latency: denormals flushed in the pool threads (the calling thread keeps its own
    # flags here, where torch is not installed to set them).
    opts.add_session_config_entry("session.set_denormal_as_zero", "1")
    providers = ["CPUExecutionProvider"]
    if runtime == "onnxruntime-cuda":
        providers = ["CUDAExecutionProvider"] + providers
    return ort.InferenceSession(data, opts, providers=providers)


def _input_for(session: Any, shape: list[int]) -> Any:
    import numpy as np

    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].type != "tensor(float)":
        raise ModelRefused("a timed model must take exactly one float32 tensor")
    declared = inputs[0].shape
    if len(declared) != len(shape) or any(isinstance(d, int) and d != s for d, s in zip(declared, shape)):
        raise ModelRefused(f"the task's input shape {shape} does not fit the model's {declared}")
    return {inputs[0].name: np.zeros(tuple(shape), np.float32)}


def ort_timer(session: Any, feed: dict[str, Any]) -> Timer:
    run = session.run

    def timer(n: int) -> float:
        times = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            run(None, feed)  # synchronous on every provider: outputs are on the host when it returns
            times.append(time.perf_counter_ns() - t0)
        return statistics.median(times) / 1e6
    return timer


def interleave(timers: dict[str, Timer], *, rounds: int, runs_per_round: int, warmup: int, seed: int = 0,
               on_round: Callable[[int, int], None] | None = None) -> dict[str, list[float]]:
    """Per model, its per-round median ms over interleaved, shuffled rounds (autonn's method)."""
    names = list(timers)
    for name in names:
        timers[name](max(1, warmup))
    out: dict[str, list[float]] = {name: [] for name in names}
    rng, was_enabled = random.Random(seed), gc.isenabled()
    gc.disable()  # a collection inside a timed run would land on one model only
    try:
        for r in range(rounds):
            rng.shuffle(names)
            for name in names:
                out[name].append(timers[name](runs_per_round))
            if on_round:
                on_round(r + 1, rounds)
    finally:
        if was_enabled:
            gc.enable()
    return out


def noise_floor(per_round: dict[str, list[float]]) -> float | None:
    import numpy as np

    spreads = []
    for values in per_round.values():
        if len(values) > 1:
            p25, p50, p75 = np.percentile(np.asarray(values, dtype=np.float64), [25, 50, 75])
            if p50 > 0:
                spreads.append(float((p75 - p25) / p50))
    return float(np.median(spreads)) if spreads else None


# --- talking to project_manager --------------------------------------------------------------------
class Agent:
    def __init__(self, *, server: str, device: str, token: str, max_threads: int | None = None,
                 poll_seconds: float = 2.0, retry_for: float = 3600.0):
        self.device, self.poll_seconds, self.retry_for = device, poll_seconds, retry_for
        self.max_threads = max_threads
        headers = {"Authorization": f"Bearer {token}", "User-Agent": f"tango-agent/{AGENT_VERSION}"}
        self.http = httpx.Client(base_url=server.rstrip("/"), headers=headers, timeout=60.0)
        self.config: dict[str, Any] = {}

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request, retried with bounded exponential backoff while the server is away (no
        answer, 5xx, 429). 401 raises Unauthorized; other answers go back to the caller."""
        delay, started = 0.5, time.monotonic()
        while True:
            try:
                resp = self.http.request(method, path, **kwargs)
                if resp.status_code == 401:
                    raise Unauthorized(_detail(resp))
                if resp.status_code < 500 and resp.status_code != 429:
                    return resp
                problem = f"{resp.status_code} {_detail(resp)}"
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if time.monotonic() - started > self.retry_for:
                raise GaveUp(f"{self.http.base_url} has not answered {method} {path} for "
                             f"{self.retry_for:.0f} s (last: {problem})")
            wait = delay * (0.5 + random.random())
            log.warning("server not answering %s %s (%s); retrying in %.1f s", method, path, problem, wait)
            time.sleep(wait)
            delay = min(delay * 2, MAX_BACKOFF_SECONDS)

    def register(self) -> dict[str, Any]:
        facts = device_facts(max_threads=self.max_threads)
        resp = self.call("POST", "/agent/register", json={"device": self.device, "version": AGENT_VERSION,
                                                          "facts": facts})
        if resp.status_code in (403, 422):  # another device's token, facts the server will not take
            raise Unauthorized(_detail(resp))
        _expect(resp, 200)
        self.config = resp.json()
        log.info("registered as the agent of %s (%s, %s cores; times %s)", self.device, facts["cpu"],
                 facts["cores"], ", ".join(facts["timing_runtimes"]) or "nothing")
        return self.config

    def run(self, *, once: bool = False) -> None:
        self.register()
        while True:
            resp = self.call("POST", "/agent/lease", json={})
            if resp.status_code == 204:
                if once:
                    log.info("no measurement task waiting")
                    return
                time.sleep(self.poll_seconds)
                continue
            _expect(resp, 200)
            self.work(resp.json())
            if once:
                return

    def work(self, task: dict[str, Any]) -> None:
        log.info("task %s: %d models, %d rounds on %s", task["id"], len(task["models"]), task["rounds"],
                 task["runtime"])
        beat = Heartbeat(self, task)
        beat.start()
        started = time.monotonic()
        try:
            timers = self.prepare(task, beat)
            per_round = interleave(timers, rounds=task["rounds"], runs_per_round=task["runs_per_round"],
                                   warmup=task["warmup"], seed=task["seed"], on_round=beat.round_done)
        except LeaseLost as exc:
            log.warning("task %s: %s; dropping it", task["id"], exc)
            return
        except Exception as exc:  # a refused model, an ORT error: the server must hear why, not re-lease it
            log.exception("task %s failed", task["id"])
            self.call("POST", f"/agent/tasks/{task['id']}/failure",
                      json={"lease_id": task["lease_id"], "error": f"{type(exc).__name__}: {exc}"[:4000]})
            return
        finally:
            beat.stop()
        body = {"lease_id": task["lease_id"], "timings": per_round, "noise_floor": noise_floor(per_round),
                "runtime": task["runtime"], "threads": task["threads"], "agent_version": AGENT_VERSION,
                "seconds": round(time.monotonic() - started, 3)}
        resp = self.call("POST", f"/agent/tasks/{task['id']}/results", json=body)
        if resp.status_code == 409:
            log.warning("task %s: results not taken: %s", task["id"], _detail(resp))
        else:
            _expect(resp, 200)
            log.info("task %s: results posted (noise floor %s)", task["id"], body["noise_floor"])

    def prepare(self, task: dict[str, Any], beat: Heartbeat) -> dict[str, Timer]:
        timers: dict[str, Timer] = {}
        for i, model in enumerate(task["models"]):
            beat.check()
            resp = self.call("GET", f"/agent/tasks/{task['id']}/model/{model['name']}")
            if resp.status_code == 409:
                raise LeaseLost(_detail(resp))
            _expect(resp, 200)
            check_onnx(resp.content)
            session = make_session(resp.content, threads=task["threads"], runtime=task["runtime"])
            timers[model["name"]] = ort_timer(session, _input_for(session, model["input_shape"]))
            beat.report(0.2 * (i + 1) / len(task["models"]), f"loaded {i + 1}/{len(task['models'])} models")
        return timers


class Heartbeat:
    """Keeps the task's lease alive while the agent works and carries its progress; learns when the
    lease is lost. Beats go through their own short-timeout client and are never retried: the next
    beat is the retry."""

    def __init__(self, agent: Agent, task: dict[str, Any]):
        self.agent, self.task = agent, task
        self.every = float(task.get("heartbeat_seconds") or 10.0)
        self.progress, self.message = 0.0, "starting"
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="tango-agent-heartbeat")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def report(self, progress: float, message: str) -> None:
        self.progress, self.message = progress, message

    def round_done(self, done: int, total: int) -> None:
        self.report(0.2 + 0.8 * done / total, f"round {done}/{total}")
        self.check()

    def check(self) -> None:
        if self.lost:
            raise LeaseLost(self.lost)

    def _loop(self) -> None:
        agent_http = self.agent.http
        # A client of its own: the main thread is downloading models on the other one meanwhile.
        http = httpx.Client(base_url=agent_http.base_url, headers=agent_http.headers, timeout=min(10.0, self.every))
        try:
            self._beat(http)
        finally:
            http.close()

    def _beat(self, http: httpx.Client) -> None:
        while not self._stop.wait(self.every):
            body = {"task_id": self.task["id"], "lease_id": self.task["lease_id"], "progress": self.progress,
                    "message": self.message}
            try:
                resp = http.post("/agent/heartbeat", json=body)
            except httpx.TransportError as exc:
                log.warning("heartbeat not delivered (%s)", exc)
                continue
            if resp.status_code == 409:
                self.lost = _detail(resp)
                return


def _detail(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("detail", resp.text))[:500]
    except ValueError:
        return resp.text[:500]


def _expect(resp: httpx.Response, status: int) -> None:
    if resp.status_code != status:
        raise RuntimeError(f"{resp.request.method} {resp.request.url.path} -> {resp.status_code}: {_detail(resp)}")


# --- the command -----------------------------------------------------------------------------------
def agent(server: Annotated[str, typer.Option(help="project_manager's URL, e.g. http://tango:8080")],
          device: Annotated[str, typer.Option(help="the device profile this machine is")],
          token: Annotated[str, typer.Option(envvar="TANGO_AGENT_TOKEN", show_default=False,
                                             help="the device's agent token (POST /devices/NAME/agent-token); "
                                                  "prefer the TANGO_AGENT_TOKEN variable: arguments show in ps")],
          threads: Annotated[int | None, typer.Option(min=1, help="most intra-op threads a task may use "
                                                                  "(default: every core)")] = None,
          once: Annotated[bool, typer.Option(help="do at most one task, then exit")] = False,
          poll: Annotated[float, typer.Option(min=0.05, help="seconds between looks for work when idle")] = 2.0,
          retry_for: Annotated[float, typer.Option(min=0, help="give up after the server has been away "
                                                               "this many seconds")] = 3600.0) -> None:
    """Run the profiling agent on this device: time the models Tango sends, post the results."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s tango-agent %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per model download is noise
    worker = Agent(server=server, device=device, token=token, max_threads=threads, poll_seconds=poll,
                   retry_for=retry_for)
    try:
        worker.run(once=once)
    except Unauthorized as exc:
        log.error("the server refused this agent's token: %s", exc)
        raise typer.Exit(2) from None
    except GaveUp as exc:
        log.error("%s", exc)
        raise typer.Exit(3) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    finally:
        worker.http.close()
