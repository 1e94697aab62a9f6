"""The documentation cannot drift from the code.

Python samples are never typed into Markdown: a page includes a file of ``docs/examples`` with
pymdownx.snippets, and a test under ``tests/`` imports and drives that file. These tests hold
the pages, the samples, the site's navigation and the API reference to that rule; the rendering
itself is checked by ``mkdocs build --strict`` in ``.ci/run``.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

import fastapi_tenancy

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
TESTS = ROOT / "tests"
README = ROOT / "README.md"
QUICKSTART = EXAMPLES / "quickstart.py"
REFERENCE = DOCS / "reference.md"

PYTHON_LANGUAGES = {"python", "py", "python3", "py3"}
OPENING_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`]*?)[ \t]*$"
)
# One include per line, by path from the repository root, with an optional named section.
# pymdownx.snippets also takes line numbers ("file.py:3:10"); they drift, so they are refused.
SNIPPET_LINE = re.compile(r'^--8<-- "(?P<path>[^":]+)(?::(?P<section>[A-Za-z0-9_-]+))?"$')
ANY_SNIPPET = re.compile(r"^[ \t]*--8<--[ \t]+(?P<quote>[\"'])(?P<target>.+?)(?P=quote)[ \t]*$")
DIRECTIVE = re.compile(r"^:::[ \t]+(?P<identifier>[\w.]+)[ \t]*$", re.MULTILINE)


@dataclass(frozen=True)
class Block:
    """A fenced code block of a Markdown file: its language and its lines, dedented."""

    path: Path
    line: int
    language: str
    lines: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def fenced_blocks(path: Path) -> Iterator[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = OPENING_FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        words = opening["info"].strip("{} \t").split()
        language = words[0].lstrip(".").lower() if words else ""
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        body: list[str] = []
        end = index + 1
        while end < len(lines) and not closing.match(lines[end]):
            body.append(lines[end].removeprefix(indent))
            end += 1
        yield Block(path, index + 1, language, tuple(body))
        index = end + 1


def docs_pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def page_id(path: Path) -> str:
    return str(path.relative_to(DOCS))


def python_blocks(path: Path) -> list[Block]:
    return [block for block in fenced_blocks(path) if block.language in PYTHON_LANGUAGES]


def snippet_targets(path: Path) -> list[str]:
    """Every ``--8<-- "..."`` include of a page, fenced or not (``;--8<--`` escapes one)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [match["target"] for line in lines if (match := ANY_SNIPPET.match(line))]


def nav_pages(entries: Any) -> Iterator[str]:
    """The page paths of an mkdocs ``nav``, in order, however deeply sections nest."""
    if isinstance(entries, str):
        yield entries
    elif isinstance(entries, list):
        for entry in entries:
            yield from nav_pages(entry)
    elif isinstance(entries, dict):
        for value in entries.values():
            yield from nav_pages(value)


def site_nav() -> list[str]:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    return list(nav_pages(config["nav"]))


def samples_named_by(source: str) -> set[str]:
    """The samples (``docs/examples/<name>.py``) a test module imports or names by path."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from docs.examples import quickstart` imports the module quickstart
            modules = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        names |= {m.split(".")[2] for m in modules if m.startswith("docs.examples.")}
    names |= set(re.findall(r"\bdocs/examples/(\w+)\.py\b", source))
    names |= set(re.findall(r"[\"']examples[\"']\s*/\s*[\"'](\w+)\.py[\"']", source))
    return names


def resolve(identifier: str) -> Any:
    """The module or object an mkdocstrings identifier (``package.module.Name``) names."""
    parts = identifier.split(".")
    for split in range(len(parts), 0, -1):
        try:
            target: Any = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[split:]:
            target = getattr(target, attribute)
        return target
    raise ModuleNotFoundError(identifier)


def reference_directives() -> list[str]:
    return DIRECTIVE.findall(REFERENCE.read_text(encoding="utf-8"))


@pytest.mark.parametrize("page", docs_pages(), ids=page_id)
def test_python_blocks_in_a_docs_page_only_include_sample_files(page: Path) -> None:
    for block in python_blocks(page):
        code = [line for line in block.lines if line.strip()]
        assert code, f"{block.where}: an empty python block"
        typed = [line for line in code if not SNIPPET_LINE.match(line.strip())]
        assert not typed, (
            f"{block.where}: a python block may only include files of docs/examples, one "
            f'`--8<-- "docs/examples/<file>.py"` or `--8<-- "docs/examples/<file>.py:<section>"` '
            f"line each; move this code into a sample that a test drives: {typed[:3]}"
        )


def test_the_readmes_app_is_a_copy_of_the_quickstart_sample() -> None:
    blocks = python_blocks(README)
    assert blocks, "README.md lost its python block (the quick-start app)"
    sample = QUICKSTART.read_text(encoding="utf-8").splitlines()
    for block in blocks:
        # Every line, in order, is a line of the sample: the README may leave lines out
        # (the imports), never change or add one.
        position = 0
        for line in (line for line in block.lines if line.strip()):
            try:
                position = sample.index(line, position) + 1
            except ValueError:
                pytest.fail(
                    f"{block.where}: {line!r} is not the next line of {QUICKSTART.name}; "
                    "README's app must stay a copy of docs/examples/quickstart.py"
                )


@pytest.mark.parametrize("page", docs_pages(), ids=page_id)
def test_every_snippet_include_of_a_docs_page_names_an_existing_file_and_section(
    page: Path,
) -> None:
    for target in snippet_targets(page):
        match = SNIPPET_LINE.match(f'--8<-- "{target}"')
        assert match, (
            f"{page_id(page)}: include {target!r} must be a path from the repository root, "
            "optionally with a named section (no line numbers)"
        )
        source = ROOT / match["path"]
        assert source.is_file(), f"{page_id(page)}: included file {match['path']} does not exist"
        section = match["section"]
        if section is not None:
            text = source.read_text(encoding="utf-8")
            start = text.find(f"--8<-- [start:{section}]")
            end = text.find(f"--8<-- [end:{section}]")
            assert 0 <= start < end, (
                f"{page_id(page)}: {match['path']} has no section {section!r} "
                f"(lines `# --8<-- [start:{section}]` ... `# --8<-- [end:{section}]`)"
            )


def test_every_docs_sample_is_driven_by_a_test() -> None:
    named = set[str]()
    for path in TESTS.rglob("*.py"):
        if path.resolve() != Path(__file__).resolve():
            named |= samples_named_by(path.read_text(encoding="utf-8"))
    # A test module of the docs (docs/examples/test_*.py) counts once a test under tests/ runs
    # it; then the samples it imports count too.
    for path in EXAMPLES.glob("test_*.py"):
        if path.stem in named:
            named |= samples_named_by(path.read_text(encoding="utf-8"))
    samples = sorted(path for path in EXAMPLES.glob("*.py") if path.name != "__init__.py")
    assert samples, "docs/examples has no samples"
    untested = [path.name for path in samples if path.stem not in named]
    assert not untested, (
        f"samples no test under tests/ imports or runs (as docs.examples.<name> or "
        f"docs/examples/<name>.py): {untested}"
    )


@pytest.mark.parametrize("page", site_nav())
def test_every_page_of_the_site_navigation_exists(page: str) -> None:
    assert (DOCS / page).is_file(), f"mkdocs.yml's nav names docs/{page}, which does not exist"


def test_every_docs_page_is_in_the_site_navigation() -> None:
    nav = set(site_nav())
    missing = [page_id(page) for page in docs_pages() if page_id(page) not in nav]
    assert not missing, f"pages missing from mkdocs.yml's nav: {missing}"


def test_every_object_the_api_reference_names_exists() -> None:
    directives = reference_directives()
    assert directives, "docs/reference.md has no ::: directives"
    for identifier in directives:
        try:
            resolve(identifier)
        except (ImportError, AttributeError) as error:
            pytest.fail(f"docs/reference.md names {identifier}, which does not exist: {error}")


def test_the_api_reference_documents_every_public_name() -> None:
    directives = set(reference_directives())
    modules = [
        target
        for target in map(resolve, directives)
        if inspect.ismodule(target) and hasattr(target, "__all__")
    ]
    undocumented = [
        name
        for name in fastapi_tenancy.__all__
        if name != "__version__"
        and f"fastapi_tenancy.{name}" not in directives
        and not any(
            name in module.__all__ and getattr(module, name) is getattr(fastapi_tenancy, name)
            for module in modules
        )
    ]
    assert not undocumented, (
        f"public names docs/reference.md does not document (add `::: fastapi_tenancy.<name>` "
        f"under the right heading): {undocumented}"
    )


def test_every_class_and_function_in_the_api_reference_has_a_docstring() -> None:
    # mkdocstrings leaves out members without a docstring, so a public name without one would
    # silently vanish from the reference.
    shown: list[tuple[str, Any]] = []
    for identifier in reference_directives():
        target = resolve(identifier)
        if inspect.ismodule(target):
            shown += [(f"{identifier}.{n}", getattr(target, n)) for n in target.__all__]
        else:
            shown.append((identifier, target))
    missing = [
        identifier
        for identifier, target in shown
        # pytest fixtures are wrappers around their function: unwrap them
        if (inspect.isclass(target) or inspect.isfunction(inspect.unwrap(target)))
        and not (target.__doc__ or "").strip()
    ]
    assert not missing, f"public classes and functions without a docstring: {missing}"
