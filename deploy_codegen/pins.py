"""Pinned requirements from what this service itself runs: a package pins the exact versions it was
built and verified with, dependency closure included."""

from __future__ import annotations

import re
from importlib import metadata

from packaging.requirements import Requirement


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_version(name: str) -> str:
    return metadata.version(name)


def closure(names: list[str]) -> dict[str, str]:
    """Every installed distribution the named ones need (extras and markers honoured) -> version."""
    found: dict[str, str] = {}
    pending: list[tuple[str, frozenset[str]]] = [(n, frozenset()) for n in names]
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        name, extras = pending.pop()
        if (canonical(name), extras) in seen:
            continue
        seen.add((canonical(name), extras))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise LookupError(f"{name} is not installed in this service's environment; a package cannot "
                              f"pin what the service does not have") from None
        found[canonical(dist.metadata["Name"])] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            wanted = [""] + sorted(extras)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in wanted):
                continue
            pending.append((req.name, frozenset(req.extras)))
    return dict(sorted(found.items()))


def requirement_lines(names: list[str], *, explicit: dict[str, str] | None = None) -> list[str]:
    """`name==version` for the closure of installed `names`, plus explicit pins of what is not
    installed here (TensorRT)."""
    pins = closure(names) if names else {}
    pins.update({canonical(k): v for k, v in (explicit or {}).items()})
    return [f"{name}=={version}" for name, version in sorted(pins.items())]
