"""The docs stay true to the code: every setting is documented under its group with
its default, the README stays a short guide that starts with the two commands, and no
relative link in the README or docs/ points to a missing file."""

from __future__ import annotations

import re
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest

from tasks.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# The groups are Settings' dataclass bases, so a new group is checked without edits here.
GROUPS = [c for c in Settings.__mro__[1:] if is_dataclass(c)]
LINK = re.compile(r"\]\(([^)#\s]+)[^)]*\)")  # [text](target#anchor "title"): the target


def shown(default: object) -> str:
    """A default as docs/configuration.md writes it: as in the code, "" for empty."""
    return '""' if default == "" else str(default)


def sections(markdown: str) -> dict[str, str]:
    """Each ``## `` heading of a page with the text under it."""
    parts = re.split(r"^## (.*)$", markdown, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_every_setting_is_documented_under_its_group_with_its_default() -> None:
    page = sections((DOCS / "configuration.md").read_text())
    missing = []
    for group in GROUPS:
        body = next((b for h, b in page.items() if f"`{group.__name__}`" in h), "")
        for f in fields(group):
            row = f"| `MIA_{f.name.upper()}` | `{shown(f.default)}` |"
            if not any(line.startswith(row) for line in body.splitlines()):
                missing.append(f"{group.__name__}: {row}")
    assert missing == []
    assert {f.name for g in GROUPS for f in fields(g)} == {f.name for f in fields(Settings)}


def test_the_readme_is_short_and_starts_with_make_run_and_make_test() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250
    head = "\n".join(lines[:15])
    assert re.search(r"^make run\b", head, flags=re.M)
    assert re.search(r"^make test\b", head, flags=re.M)


@pytest.mark.parametrize(
    "page", [ROOT / "README.md", *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name
)
def test_relative_links_point_to_files_that_exist(page: Path) -> None:
    targets = [t for t in LINK.findall(page.read_text()) if not re.match(r"[a-z]+:", t)]
    assert [t for t in targets if not (page.parent / t).exists()] == []
