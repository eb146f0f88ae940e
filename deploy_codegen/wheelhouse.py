"""Offline environments for verification: a wheelhouse repacked from this service's own installed
distributions, and one virtualenv per requirements.txt built from it with `pip --no-index`.

Why repack: verification must not download anything, and every version a package pins is the one
installed here, so the installed files (listed in each distribution's RECORD) are the wheel.
Distributions too large to copy for every venv (torch with its CUDA libraries, ~5.5 GB) are
linked instead: a .pth in the venv points at a folder of symlinks to exactly that closure's files,
and pip then finds those pins already satisfied. Reports say which distributions were linked.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
import uuid
import zipfile
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from deploy_codegen.pins import canonical, closure

# Roots whose dependency closure is linked rather than installed.
LINKED_ROOTS = ("torch",)
# A fresh venv already holds its own copies of these; they are installed from the wheelhouse, not linked.
NEVER_LINKED = frozenset({"pip", "setuptools", "wheel"})
SKIP_IN_WHEEL = ("INSTALLER", "REQUESTED", "direct_url.json", "RECORD")


@contextmanager
def locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _wheel_tag(dist: metadata.Distribution) -> str:
    tags = [line.split(":", 1)[1].strip() for line in (dist.read_text("WHEEL") or "").splitlines()
            if line.startswith("Tag:")]
    if not tags:
        return f"cp{sys.version_info.major}{sys.version_info.minor}-none-any"
    parts = [sorted({t.split("-")[i] for t in tags}) for i in range(3)]
    return "-".join(".".join(p) for p in parts)


def _record_line(arcname: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}"


def repack(name: str, wheelhouse: Path) -> Path:
    """The installed distribution `name` as a wheel in `wheelhouse` (made once, then reused)."""
    dist = metadata.distribution(name)
    dist_name = canonical(dist.metadata["Name"]).replace("-", "_")
    target = wheelhouse / f"{dist_name}-{dist.version}-{_wheel_tag(dist)}.whl"
    if target.exists():
        return target
    wheelhouse.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".tmp{uuid.uuid4().hex}")  # threads of one worker share a pid
    records, dist_info = [], None
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for file in dist.files or []:
            parts = Path(file).parts
            if not parts or parts[0] == ".." or "__pycache__" in parts or file.suffix == ".pyc":
                continue  # console scripts are recreated from entry_points.txt; bytecode is rebuilt
            if parts[0].endswith(".dist-info"):
                dist_info = parts[0]
                if parts[-1] in SKIP_IN_WHEEL:
                    continue
            path = Path(dist.locate_file(file))
            if not path.is_file():
                continue
            data = path.read_bytes()
            info = zipfile.ZipInfo(str(file), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (path.stat().st_mode & 0o777) << 16
            zf.writestr(info, data)
            records.append(_record_line(str(file), data))
        if dist_info is None:
            raise LookupError(f"{name} has no .dist-info in its RECORD; it cannot be repacked")
        records.append(f"{dist_info}/RECORD,,")
        zf.writestr(f"{dist_info}/RECORD", "\n".join(records) + "\n")
    tmp.rename(target)
    return target


def parse_requirements(text: str) -> list[Requirement]:
    return [Requirement(line.strip()) for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def linked_closure(reqs: list[Requirement]) -> dict[str, str]:
    names = {canonical(r.name) for r in reqs}
    roots = [r for r in LINKED_ROOTS if canonical(r) in names]
    return {k: v for k, v in closure(roots).items() if k not in NEVER_LINKED} if roots else {}


def link_folder(dists: dict[str, str], cache: Path) -> Path:
    """A folder of symlinks to the installed top-level files of exactly these distributions."""
    key = hashlib.sha256(repr(sorted(dists.items())).encode()).hexdigest()[:16]
    folder = cache / "linked" / key
    with locked(cache / "locks" / f"linked-{key}"):
        if folder.exists():
            return folder
        tmp = folder.with_name(f"{key}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name in dists:
            dist = metadata.distribution(name)
            for top in {Path(f).parts[0] for f in dist.files or [] if Path(f).parts and Path(f).parts[0] != ".."}:
                src = Path(dist.locate_file(top))
                if src.exists() and not (tmp / top).exists():
                    (tmp / top).symlink_to(src)
        tmp.rename(folder)
    return folder


def venv_for(requirements: str, cache: Path, *, timeout: float = 900) -> dict:
    """A fresh virtualenv with exactly `requirements` installed offline; one per distinct file."""
    # Real paths: the venv's .pth must not depend on a symlink that may be gone later.
    cache = cache.resolve()
    reqs = parse_requirements(requirements)
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    # Keyed by the requirements themselves, not the file's comments: packages that pin the same
    # things share one venv.
    pinned = "\n".join(sorted(str(r) for r in reqs))
    key = hashlib.sha256(f"{py}\n{pinned}".encode()).hexdigest()[:16]
    folder = cache / "venvs" / key
    linked = linked_closure(reqs)
    info = {"python": sys.executable, "venv": str(folder), "key": key, "linked": linked,
            "wheelhouse": str(cache / "wheelhouse"), "reused": True, "install_seconds": 0.0}
    with locked(cache / "locks" / f"venv-{key}"):
        if (folder / ".complete").exists() and _links_intact(folder):
            return info
        start = time.perf_counter()
        shutil.rmtree(folder, ignore_errors=True)
        wheelhouse = cache / "wheelhouse"
        # Everything pip may need: each pinned distribution not linked (the closure is pinned).
        for req in reqs:
            if canonical(req.name) not in linked:
                try:
                    repack(req.name, wheelhouse)
                except metadata.PackageNotFoundError:
                    raise LookupError(f"{req} is not installed in the service; it cannot be verified offline") from None
        subprocess.run([_base_python(), "-m", "venv", str(folder)], check=True, capture_output=True, timeout=300)
        if linked:
            site = next((folder / "lib").glob("python*/site-packages"))
            (site / "tango-linked.pth").write_text(str(link_folder(linked, cache)) + "\n")
        req_file = folder / "requirements.txt"
        req_file.write_text(pinned + "\n")
        proc = subprocess.run([str(folder / "bin" / "python"), "-m", "pip", "install", "--no-index",
                               "--find-links", str(wheelhouse), "--no-cache-dir", "--disable-pip-version-check",
                               "-r", str(req_file)], capture_output=True, text=True, timeout=timeout,
                              env=clean_env())
        if proc.returncode != 0:
            raise RuntimeError(f"pip could not install the package's requirements offline:\n{proc.stdout[-1500:]}"
                               f"\n{proc.stderr[-1500:]}")
        (folder / ".complete").write_text(pinned + "\n")
        info.update(reused=False, install_seconds=round(time.perf_counter() - start, 2))
    return info


def _links_intact(folder: Path) -> bool:
    return all(Path(line.strip()).is_dir() for pth in folder.glob("lib/python*/site-packages/tango-linked.pth")
               for line in pth.read_text().splitlines() if line.strip())


def _base_python() -> str:
    """The interpreter this service's venv was made from, so the new venv inherits nothing of ours."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    return base if Path(base).exists() else sys.executable


def clean_env() -> dict[str, str]:
    """No PYTHON*/PIP*/TANGO_* settings of the service leak into a package's environment."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_NO_INPUT"] = "1"
    return env
