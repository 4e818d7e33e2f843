"""Reading the pinned requirement files: each line ``name[extras]==version``, and
``-r other.txt`` includes followed (relative to the including file)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from packaging.requirements import Requirement


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_lines(path: Path) -> Iterator[tuple[Path, str]]:
    """Each requirement line of ``path`` and of the files it includes (``-r``)."""
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("-r "):
            yield from requirement_lines(path.parent / line[3:].strip())
        elif line:
            yield path, line


def pinned_requirements(path: Path) -> dict[str, Requirement]:
    found: dict[str, Requirement] = {}
    for source, line in requirement_lines(path):
        requirement = Requirement(line)
        specs = list(requirement.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{source.name}: {line} unpinned"
        assert norm(requirement.name) not in found, f"{requirement.name} pinned twice"
        found[norm(requirement.name)] = requirement
    return found


def pins(path: Path) -> dict[str, str]:
    return {
        name: next(iter(req.specifier)).version for name, req in pinned_requirements(path).items()
    }


def included(path: Path) -> set[str]:
    return {source.name for source, _ in requirement_lines(path)}
