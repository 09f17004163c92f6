"""The documentation hangs together: nav pages exist, links and anchors resolve, and every
``::: name`` in the API reference names something importable; and the site builds in
strict mode, as ``make docs`` builds it (no network needed)."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
LINKED = [*PAGES, ROOT / "README.md"]

FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def prose(path: Path) -> str:
    """The page without code blocks and inline code, where link-like text is not a link."""
    return INLINE_CODE.sub("", FENCE.sub("", path.read_text()))


def slug(heading: str) -> str:
    """The anchor Python-Markdown's toc extension (as mkdocs uses it) gives a heading."""
    text = re.sub(r"[`*_]", "", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


DIRECTIVE = re.compile(r"^::: ([\w.]+)\s*$", re.M)


def has_anchor(path: Path, anchor: str) -> bool:
    """A heading's slug, or an object mkdocstrings renders there (``::: corral.Future``
    gives ``#corral.Future`` and ``#corral.Future.<member>``)."""
    text = FENCE.sub("", path.read_text())
    if anchor in {slug(h) for h in HEADING.findall(text)}:
        return True
    return any(anchor == name or anchor.startswith(f"{name}.") for name in DIRECTIVE.findall(text))


def nav_pages() -> list[str]:
    """Every page named in mkdocs.yml's nav (read as text: PyYAML is a docs-only dependency)."""
    text = (ROOT / "mkdocs.yml").read_text()
    nav = text.split("\nnav:\n", 1)[1]
    nav = re.split(r"\n(?=\S)", nav, maxsplit=1)[0]  # up to the next top-level key
    return re.findall(r"([\w./-]+\.md)\s*$", nav, re.M)


def test_every_nav_page_exists_and_every_page_is_in_the_nav():
    listed = nav_pages()
    assert "index.md" in listed
    missing = [page for page in listed if not (DOCS / page).is_file()]
    assert not missing, f"mkdocs.yml lists pages that do not exist: {missing}"
    unlisted = [str(p.relative_to(DOCS)) for p in PAGES if str(p.relative_to(DOCS)) not in listed]
    assert not unlisted, f"pages missing from mkdocs.yml's nav: {unlisted}"


@pytest.mark.parametrize("path", LINKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files_and_anchors(path):
    broken = []
    for target in LINK.findall(prose(path)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and dest.is_relative_to(DOCS):
            if not has_anchor(dest, anchor):
                broken.append(f"{target}: no heading with anchor #{anchor}")
    assert not broken, f"broken links in {path.relative_to(ROOT)}: {broken}"


def resolve(dotted: str) -> object:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(dotted)


def test_api_reference_names_importable_objects():
    names = [
        name
        for page in sorted((DOCS / "api").glob("*.md"))
        for name in DIRECTIVE.findall(page.read_text())
    ]
    assert "corral.Client" in names
    unresolved = []
    for name in names:
        try:
            resolve(name)
        except (ImportError, AttributeError) as e:
            unresolved.append(f"{name}: {e}")
    assert not unresolved, f"API reference names that do not import: {unresolved}"


@pytest.mark.timeout(180)
def test_the_site_builds_without_warnings(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=170,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    assert (tmp_path / "api" / "executor" / "index.html").exists()


README = ROOT / "README.md"
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
PRINTED = re.compile(r"^\s*print\(.*\)\s*#\s*(.+?)\s*$", re.M)  # print(x)  # what it prints
README_SNIPPETS = PYTHON_BLOCK.findall(README.read_text())
PATH_LIKE = re.compile(r"(?:\.\.?/)*[\w.-]+/[\w./-]*")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("code", README_SNIPPETS,
                         ids=[f"block-{i + 1}" for i in range(len(README_SNIPPETS))])
def test_readme_snippets_run_as_written_and_print_what_they_say(code, tmp_path):
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=110)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == PRINTED.findall(code), result.stderr


# Pages whose python blocks run as written, each printing what its comments say.
RUN_PAGES = ["configuration.md", "from-dask.md", "memory.md"]
PAGE_SNIPPETS = [(page, code) for page in RUN_PAGES
                 for code in PYTHON_BLOCK.findall((DOCS / page).read_text())]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("page", "code"), PAGE_SNIPPETS,
                         ids=[f"{page}-{i + 1}" for i, (page, _) in enumerate(PAGE_SNIPPETS)])
def test_page_snippets_run_as_written_and_print_what_they_say(page, code, tmp_path):
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=110, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == PRINTED.findall(code), result.stderr


def test_readme_names_no_file_outside_the_repository():
    assert len(README_SNIPPETS) >= 2  # the snippets test above has something to run
    spans = [span.strip("`") for span in INLINE_CODE.findall(FENCE.sub("", README.read_text()))]
    wrong = []
    for name in filter(PATH_LIKE.fullmatch, spans):
        dest = (ROOT / name).resolve()
        if not dest.is_relative_to(ROOT):
            wrong.append(f"{name}: outside the repository")
        elif dest.suffix and not dest.exists():  # a directory may be a build output (site/)
            wrong.append(f"{name}: no such file")
    assert not wrong, f"README.md names: {wrong}"


COORDINATION = DOCS / "coordination.md"
COORDINATION_SNIPPETS = PYTHON_BLOCK.findall(COORDINATION.read_text())


@pytest.mark.timeout(120)
@pytest.mark.parametrize("code", COORDINATION_SNIPPETS,
                         ids=[f"block-{i + 1}" for i in range(len(COORDINATION_SNIPPETS))])
def test_coordination_snippets_run_as_written_and_print_what_they_say(code, tmp_path):
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=110)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == PRINTED.findall(code), result.stderr


# deploying.md: the sections whose python blocks run on any machine (others need a SLURM
# controller or a Kubernetes cluster, and have tests of their own).
DEPLOYING = DOCS / "deploying.md"
DEPLOYING_RUN = ("Local", "Adaptive", "Writing a cluster manager")
DEPLOYING_SNIPPETS = [
    (title, code)
    for section in re.split(r"^## ", DEPLOYING.read_text(), flags=re.M)[1:]
    for title in [section.split("\n", 1)[0].strip()] if title in DEPLOYING_RUN
    for code in PYTHON_BLOCK.findall(section)
]


def test_every_runnable_deploying_section_has_a_snippet():
    assert sorted({title for title, _ in DEPLOYING_SNIPPETS}) == sorted(DEPLOYING_RUN)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("title", "code"), DEPLOYING_SNIPPETS,
                         ids=[title for title, _ in DEPLOYING_SNIPPETS])
def test_deploying_snippets_run_as_written_and_print_what_they_say(title, code, tmp_path):
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=110, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == PRINTED.findall(code), result.stderr
