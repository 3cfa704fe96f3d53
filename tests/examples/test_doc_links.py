"""Every relative link in the user guide and the README points to a file (and heading) that exists.

Links are Markdown's ``[text](target)`` and ``![alt](target)`` outside code; web links are not
followed. A ``#fragment`` on a Markdown file must name one of its headings, spelled as GitHub
spells heading anchors.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])

_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"`+[^`]*`+")
# [text](target) or ![alt](target); the text may hold one level of [...] (e.g. "[§A.3]")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")


def _prose_lines(text: str) -> list[str]:
    """The lines of a Markdown page outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def _links(page: Path) -> list[str]:
    """Every link target on a page, outside code blocks and code spans."""
    out = []
    for line in _prose_lines(page.read_text(encoding="utf-8")):
        out += _LINK.findall(_CODE_SPAN.sub("", line))
    return out


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    """The anchors of a page's headings (repeated headings get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    out = set()
    for line in _prose_lines(page.read_text(encoding="utf-8")):
        m = _HEADING.match(line)
        if not m:
            continue
        slug = _slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _broken(page: Path) -> list[str]:
    """The link targets of one page that do not resolve, each with the reason."""
    bad = []
    for target in _links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, mailto:, ...
            continue
        path_part, _, fragment = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            bad.append(f"{target} (no file {dest})")
        elif fragment and dest.suffix == ".md" and fragment not in _anchors(dest):
            bad.append(f"{target} (no heading with anchor #{fragment} in {dest.name})")
    return bad


def test_slug_follows_github() -> None:
    assert _slug("A.3 Stability, gains and limits") == "a3-stability-gains-and-limits"
    assert _slug("Sparse-MLP baseline (paper Fig. 3)") == "sparse-mlp-baseline-paper-fig-3"
    assert _slug("`qn.train` and the loop") == "qntrain-and-the-loop"


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other page\n\n## A section\n", encoding="utf-8")
    page.write_text(
        "# Page\n[ok](other.md#a-section) [gone](missing.md) [bad](other.md#nope) "
        "`[code](missing.md)` [web](https://example.org)\n```\n[fenced](missing.md)\n```\n",
        encoding="utf-8",
    )
    bad = _broken(page)
    assert len(bad) == 2, bad
    assert bad[0].startswith("missing.md") and bad[1].startswith("other.md#nope")


# Pages with a broken link whose fix is pending elsewhere: strict, so the fix makes this fail
# and the entry is removed with it.
_KNOWN_BROKEN: dict[str, str] = {}


def _page_param(page: Path) -> object:
    name = str(page.relative_to(ROOT))
    marks = (
        [pytest.mark.xfail(strict=True, reason=_KNOWN_BROKEN[name])]
        if name in _KNOWN_BROKEN
        else []
    )
    return pytest.param(page, id=name, marks=marks)


@pytest.mark.parametrize("page", [_page_param(p) for p in PAGES])
def test_every_link_resolves(page: Path) -> None:
    bad = _broken(page)
    assert not bad, (
        f"{page.relative_to(ROOT)} links to what does not exist: {bad}; fix the link or "
        "restore the file or heading it points to"
    )


_TEST_REF = re.compile(r"`(tests/[\w/]+\.py)?::(\w+)`")


def _missing_tests(page: Path) -> list[str]:
    """Missing ``tests/x.py::test_name`` references; ``::name`` reuses the file before it."""
    bad, current = [], None
    for path, name in _TEST_REF.findall(page.read_text(encoding="utf-8")):
        current = path or current
        if current is None or not (ROOT / current).is_file():
            bad.append(f"{current}::{name} (no such file)")
        elif not re.search(rf"^def {name}\(", (ROOT / current).read_text(encoding="utf-8"), re.M):
            bad.append(f"{current}::{name} (no such test)")
    return bad


def test_tests_named_in_the_guide_exist(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("`tests/examples/test_doc_links.py::test_slug_follows_github`, `::nope`\n")
    assert _missing_tests(page) == ["tests/examples/test_doc_links.py::nope (no such test)"]
    bad = [f"{p.relative_to(ROOT)}: {m}" for p in PAGES for m in _missing_tests(p)]
    assert not bad, f"the guide names tests that do not exist: {bad}; update the names"
