"""The README and docs/ point only at things that exist: every relative link resolves to a file
of the repository (and its #anchor to a heading there), every repository path named in code
resolves, every test named as evidence is defined, every docs page is reachable from the
README, and the diagram is well-formed SVG."""

from __future__ import annotations

import re
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from lucidgrant.names import Reason

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
DIAGRAM = ROOT / "docs" / "how-it-works.svg"

# Names in code that are not repository paths: files a run creates, and kubectl's TYPE/NAME.
NOT_FILES = {".chaos-results.md", "kubeconfig.yaml", "lucidgrants-backup.yaml", "deploy/lucidgrant"}
# The Python package: `lucidgrant/x.py` means operator/lucidgrant/x.py, and dotted names
# such as `lucidgrant.testbed.kubeapi` are modules; `lucidgrant.dev` is the API group.
PACKAGE = "lucidgrant"
MODULE = re.compile(r"^lucidgrant(\.[a-z_][a-z0-9_]*)+$")
API_GROUPS = {"lucidgrant.dev"}
# What a bare file name in code (no folder) must end with to be checked.
FILE_SUFFIXES = (".py", ".yaml", ".yml", ".md", ".json", ".sh", ".toml", ".svg")

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")


def repo_files() -> set[str]:
    """Tracked files plus files added and not yet committed: what a clone will hold."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {line for line in out.splitlines() if (ROOT / line).exists()}


FILES = repo_files()
DIRS = {str(parent) for f in FILES for parent in Path(f).parents if str(parent) != "."}
TOP_LEVEL = {Path(f).parts[0] for f in FILES}
BASENAMES = {Path(f).name for f in FILES}


def prose_and_code(text: str) -> Iterator[tuple[int, str, bool]]:
    """(line number, line, inside a fenced or indented code block)."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            yield number, line, True
            continue
        indented = line.startswith("    ") and not line.lstrip().startswith(("-", "|", "*"))
        yield number, line, fenced or indented


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for _, line, code in prose_and_code(page.read_text()):
        match = HEADING.match(line)
        if code or not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def links(page: Path) -> Iterator[tuple[int, str]]:
    for number, line, code in prose_and_code(page.read_text()):
        if code:
            continue
        without_code = CODE_SPAN.sub("", line)
        for match in LINK.finditer(without_code):
            yield number, match.group(1)


def is_external(target: str) -> bool:
    return re.match(r"^[a-z][a-z0-9+.-]*:", target) is not None


def in_repo(path: Path) -> str | None:
    """The path relative to the repository root, or None when it leaves the repository."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return None


def link_problem(page: Path, target: str) -> str | None:
    path_part, _, anchor = target.partition("#")
    dest = page if not path_part else page.parent / path_part
    rel = in_repo(dest)
    if rel is None:
        return "points outside the repository"
    if rel not in FILES and rel not in DIRS and rel != ".":
        return f"{rel} is not a file of the repository"
    if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
        return f"no heading in {rel} has the anchor #{anchor}"
    return None


def named_paths(page: Path) -> Iterator[tuple[int, str]]:
    """Repository paths named in code: in spans anywhere, and in code blocks."""
    for number, line, code in prose_and_code(page.read_text()):
        chunks = [line] if code else [m.group(2) for m in CODE_SPAN.finditer(line)]
        for chunk in chunks:
            for word in chunk.split():
                word = word.strip("\"'`,;:()")
                if checkable(word) and path_like(word, bare_allowed=not code):
                    yield number, word


def checkable(word: str) -> bool:
    """Not a placeholder, a variable, an option or a URL."""
    return bool(word) and not re.search(r"[<>{}*$=]", word) and not is_external(word)


def path_like(word: str, bare_allowed: bool) -> bool:
    if word.startswith(("/", "~", "-")):
        return False
    if "/" in word:
        return word.split("/", 1)[0] in TOP_LEVEL | {PACKAGE}
    if MODULE.match(word) and word not in API_GROUPS:
        return True
    return bare_allowed and word.endswith(FILE_SUFFIXES) and "." in word[:-1]


def path_problem(word: str) -> str | None:
    if word in NOT_FILES:
        return None
    if MODULE.match(word) and "/" not in word:
        stem = word.replace(".", "/")
        found = any(f.endswith((f"{stem}.py", f"{stem}/__init__.py")) for f in FILES)
        return None if found else f"no module {word} in the repository"
    if "/" not in word:
        return None if word in BASENAMES else f"no file named {word} in the repository"
    rel = word.rstrip("/")
    if rel.split("/", 1)[0] == PACKAGE:
        rel = f"operator/{rel}"
    if rel in FILES or rel in DIRS:
        return None
    return f"{word} is not a file or folder of the repository"


# A test function named in a page (not a test file: `test_x.py` is a path, checked above).
TEST_NAME = re.compile(r"\btest_\w+\b(?!\.py)")
TEST_DEF = re.compile(r"^\s*(?:async\s+)?def\s+(test_\w+)", re.M)


def defined_tests() -> set[str]:
    return {
        name
        for f in FILES
        if f.startswith("tests/") and f.endswith(".py")
        for name in TEST_DEF.findall((ROOT / f).read_text())
    }


DEFINED_TESTS = defined_tests()


def unknown_test(name: str) -> str | None:
    return None if name in DEFINED_TESTS else f"no test function {name} in the repository"


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_relative_link_resolves(page: Path) -> None:
    problems = [
        f"{page_id(page)}:{number}: ({target}) {problem}"
        for number, target in links(page)
        if not is_external(target)
        for problem in [link_problem(page, target)]
        if problem
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_named_repository_path_exists(page: Path) -> None:
    problems = [
        f"{page_id(page)}:{number}: {problem}"
        for number, word in named_paths(page)
        for problem in [path_problem(word)]
        if problem
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_named_test_exists(page: Path) -> None:
    problems = [
        f"{page_id(page)}:{number}: {problem}"
        for number, line in enumerate(page.read_text().splitlines(), 1)
        for name in TEST_NAME.findall(line)
        for problem in [unknown_test(name)]
        if problem
    ]
    assert not problems, "\n".join(problems)


def test_every_docs_page_is_reachable_from_the_readme() -> None:
    reached, todo = {README}, [README]
    while todo:
        page = todo.pop()
        for _, target in links(page):
            path_part = target.partition("#")[0]
            if is_external(target) or not path_part.endswith(".md"):
                continue
            dest = (page.parent / path_part).resolve()
            if dest.exists() and dest not in reached:
                reached.add(dest)
                todo.append(dest)
    unreached = [page_id(p) for p in PAGES if p.resolve() not in reached]
    assert not unreached, f"not linked from README.md (directly or through docs): {unreached}"


def test_the_diagram_is_svg_and_shown_in_the_readme() -> None:
    root = ET.parse(DIAGRAM).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.find("{http://www.w3.org/2000/svg}title") is not None
    shown = [target for _, target in links(README) if target == "docs/how-it-works.svg"]
    assert shown, "README.md does not show docs/how-it-works.svg"


def test_the_checks_catch_what_they_are_for() -> None:
    """The helpers above find a broken link, a wrong anchor, a missing path and a bare name."""
    page = ROOT / "docs" / "probe.md"
    assert link_problem(page, "reference.md#no-such-heading") is not None
    assert link_problem(page, "no-such-file.md") is not None
    assert link_problem(page, "../README.md#license") is None
    assert path_problem("operator/lucidgrant/no_such_module.py") is not None
    assert path_problem("DESIGN.md") is not None
    assert path_problem("deploy/examples/") is None
    assert path_problem("lucidgrant/no_such_module.py") is not None
    assert path_problem("lucidgrant.no_such_module") is not None
    assert path_problem("lucidgrant.status") is None
    assert unknown_test("test_no_such_behaviour") is not None
    assert unknown_test("test_the_checks_catch_what_they_are_for") is None
    assert TEST_NAME.findall("`tests/e2e/test_ha.py`, `test_x[param]`") == ["test_x"]
    assert slug("Performance and scale (figures from `make bench`)") == (
        "performance-and-scale-figures-from-make-bench"
    )
    assert slug("Runbook: LucidGrantNotReady") == "runbook-lucidgrantnotready"


def section(page: Path, heading: str) -> str:
    text = page.read_text()
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


@pytest.mark.parametrize(
    ("page", "heading"),
    [
        (README, "## Troubleshooting by condition reason"),
        (ROOT / "docs" / "reference.md", "## Conditions and reasons"),
    ],
    ids=["README", "reference"],
)
def test_every_condition_reason_is_in_the_tables(page: Path, heading: str) -> None:
    rows = [line for line in section(page, heading).splitlines() if line.startswith("|")]
    reasons_column = " ".join(row.split("|")[2] for row in rows)
    missing = [r.value for r in Reason if not re.search(rf"\b{r.value}\b", reasons_column)]
    assert not missing, f"{page_id(page)} {heading!r} lacks the reasons {missing}"
