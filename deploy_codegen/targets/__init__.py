"""Targets by name: `@register_target("tvm")` on a class that builds one kind of package.

The table in deploy_codegen.options says what each target offers; a target module says how its
package is built and checked. Every table row has a module and every module a row.
"""

from __future__ import annotations

import ast
import py_compile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from deploy_codegen.options import TARGET_TABLE, TargetOptions, TargetSpec, check_target_name
from deploy_codegen.source import SourceModel
from tango.store import Store

PACKAGE_FILES = Path(__file__).resolve().parent.parent / "package_files"


@dataclass
class BuildInput:
    source: SourceModel
    options: TargetOptions
    pkg: Path
    store: Store
    progress: Callable[[str], None] = lambda message: None
    # tvm: the tuning database to apply ({"key": <store prefix>, ...}), chosen by the generate job.
    tuning: dict[str, Any] | None = None
    calibration: Any = None  # tensorrt int8: (N, C, H, W) float32 samples


@dataclass
class BuildOutput:
    artifacts: dict[str, Any]
    toolchain: dict[str, str]
    requirements: list[str]
    notes: list[str] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)


def check(name: str, ok: bool, detail: str = "") -> dict[str, Any]:
    return {"check": name, "ok": bool(ok), "detail": detail}


class Target:
    name: ClassVar[str]
    backend_file: ClassVar[str]
    base_image: ClassVar[str] = "python:3.11-slim"

    @property
    def spec(self) -> TargetSpec:
        return TARGET_TABLE[self.name]

    def build(self, inp: BuildInput) -> BuildOutput:
        raise NotImplementedError

    def static_checks(self, pkg: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
        """Checks that need no runtime: every script compiles, every ONNX file passes the checker."""
        import onnx

        results = []
        for path in sorted(pkg.glob("*.py")):
            try:
                py_compile.compile(str(path), cfile=str(pkg / ".pycheck" / (path.name + "c")), doraise=True)
                results.append(check(f"python compiles: {path.name}", True))
            except py_compile.PyCompileError as exc:
                results.append(check(f"python compiles: {path.name}", False, str(exc)))
        for path in sorted(pkg.glob("*.onnx")):
            try:
                onnx.checker.check_model(str(path), full_check=True)
                results.append(check(f"onnx.checker: {path.name}", True))
            except Exception as exc:  # the checker raises several types; all mean "invalid"
                results.append(check(f"onnx.checker: {path.name}", False, str(exc)[:500]))
        _remove_tree(pkg / ".pycheck")
        return results

    def dockerfile(self, manifest: dict[str, Any]) -> str:
        return f"""# Runs this {self.name} package: docker build -t {manifest['name']} . && docker run -p 8000:8000 {manifest['name']}
FROM {self.base_image}
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
EXPOSE 8000
# Open Inference Protocol v2 on :8000; or: docker run IMAGE python infer.py /data/image.jpg
CMD ["python", "server.py", "--host", "0.0.0.0", "--port", "8000"]
"""


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


_REGISTRY: dict[str, type[Target]] = {}


def register_target(name: str) -> Callable[[type[Target]], type[Target]]:
    def deco(cls: type[Target]) -> type[Target]:
        if name not in TARGET_TABLE:
            raise ValueError(f"target {name!r} has no row in deploy_codegen.options.TARGET_TABLE")
        if name in _REGISTRY:
            raise ValueError(f"target {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return deco


def get_target(name: str) -> Target:
    check_target_name(name)
    return _REGISTRY[name]()


def registered() -> list[str]:
    return list(_REGISTRY)


def attribute_uses(path: Path, module_alias: str) -> set[str]:
    """Dotted attribute chains used on `module_alias` in a script (e.g. {'Builder', 'BuilderFlag.FP16'})."""
    tree = ast.parse(path.read_text())
    chains = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            parts = []
            cur: ast.AST = node
            while isinstance(cur, ast.Attribute):
                parts.append(cur.attr)
                cur = cur.value
            if isinstance(cur, ast.Name) and cur.id == module_alias:
                chains.add(".".join(reversed(parts)))
    # Keep only the longest chains (BuilderFlag.FP16, not also BuilderFlag).
    return {c for c in chains if not any(o != c and o.startswith(c + ".") for o in chains)}


# Importing the modules registers them.
from deploy_codegen.targets import onnxruntime, pytorch, tensorrt, tvm  # noqa: E402,F401
