"""The docs site: `make docs`'s build (mkdocs --strict) and what it generates.

The site is built once, as `make docs` builds it but into a scratch directory; the tests read
its pages. The generated parts must hold what their one source holds: every ``Settings`` field,
every operation of ``/openapi.json``, every public name of ``producer``, the example files as
they are, the saved reports' sections. A copy of the sources with one fault in it must fail to
build: --strict is what catches a broken link, and the hook a report section that is not there.
"""

from __future__ import annotations

import dataclasses
import html
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import producer
from producer import Settings
from producer.settings import env_name
from tests.procs import ROOT

MKDOCS = str(ROOT / ".venv" / "bin" / "mkdocs")


def build(config_dir: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """`mkdocs build --strict` (make docs' command) of the sources in ``config_dir``."""
    return subprocess.run(
        [MKDOCS, "build", "--strict", "--site-dir", str(site)], cwd=config_dir,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = build(ROOT, out)
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def page(site: Path, name: str) -> str:
    """A built page's text, tags removed and entities unescaped."""
    text = (site / f"{name}.html").read_text(encoding="utf-8")
    return html.unescape(re.sub(r"<[^>]+>", "", text))


def test_make_docs_is_the_strict_build() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "mkdocs build --strict --site-dir site" in makefile
    assert "make docs" in (ROOT / ".ci" / "run").read_text()
    assert "\nsite/\n" in (ROOT / ".gitignore").read_text()


def test_the_configuration_page_has_every_setting(site: Path) -> None:
    text = page(site, "configuration")
    for field in dataclasses.fields(Settings):
        row = re.search(rf"{env_name(field.name)}\s+{field.name}\s+(\S.*)", text)
        assert row, f"{env_name(field.name)} is missing from the configuration page"
        first_words = " ".join(field.metadata["meaning"].replace("`", "").split()[:4])
        assert first_words in " ".join(text.split()), f"{env_name(field.name)}: no meaning shown"
    assert re.search(r"BUS_BLOCK_TIMEOUT_S\s+block_timeout_s\s+float\s+5\s+how long", text)


def test_the_http_page_has_every_operation(site: Path) -> None:
    from web import create_app

    described = create_app(Settings()).test_client().get("/openapi.json").get_json()
    text = page(site, "http-api")
    for path, item in described["paths"].items():
        for method in item:
            assert f"{method.upper()} {path}" in text, (method, path)
    built = (site / "http-api.html").read_text(encoding="utf-8")
    for schema in described["components"]["schemas"]:
        assert f'id="schema-{schema.lower()}"' in built, schema


def test_the_python_page_documents_exactly_the_public_api(site: Path) -> None:
    built = (site / "python-api.html").read_text(encoding="utf-8")
    documented = set(re.findall(r'<h\d id="producer\.(\w+)"', built))
    assert documented == set(producer.__all__)
    for name in ("handlers.Reject", "tracking.Context", "cli.main"):
        assert f'id="consumers.{name}"' in built, name


def test_the_example_page_includes_the_files_tests_run(site: Path) -> None:
    text = page(site, "example")
    for name in ("handlers.py", "app.py", "Procfile"):
        source = (ROOT / "examples" / name).read_text(encoding="utf-8")
        for line in source.splitlines():
            assert line.strip() in text, (name, line)


def test_measured_tables_are_the_saved_reports_sections(site: Path) -> None:
    """A row of each included section appears on its page as the dated report has it."""
    included = {
        "load-tests": [("reports/sample/report.md", "Summary"),
                       ("reports/sample/soak/report.md", "Memory")],
        "performance": [("reports/sample/bench-20261123-093809.md", s) for s in
                        ("latency", "http", "subscriber", "memory", "peers")]
        + [("reports/sample/bench-20261207-101323.md", "tracking"),
           ("reports/sample/bench-20261207-101411.md", "cluster"),
           ("reports/sample/bench-20261207-201637.md", "drain"),
           ("reports/sample/bench-20261207-201637.md", "handlers"),
           ("reports/sample/bench-20261207-201637.md", "libraries"),
           ("reports/sample/bench-20261208-020511.md", "idempotency"),
           ("reports/sample/bench-20261208-020511.md", "priorities"),
           ("reports/sample/bench-20261208-020511.md", "after")],
    }  # fmt: skip
    for name, sections in included.items():
        markdown = (ROOT / "docs" / f"{name}.md").read_text(encoding="utf-8")
        text = re.sub(r"\s+", " ", page(site, name))
        for report, heading in sections:
            assert f"<!-- report: {report}#{heading} -->" in markdown
            body = (ROOT / "docs" / report).read_text(encoding="utf-8")
            section = body.split(f" {heading}\n", 1)[1]
            lines = section.splitlines()
            rule = next(i for i, line in enumerate(lines) if re.fullmatch(r"\|[-:| ]+\|", line))
            row = lines[rule + 1]  # the table's first row
            cells = [c.strip() for c in row.strip("|").split("|")]
            assert re.sub(r"\s+", " ", " ".join(c.strip("`") for c in cells if c)) in text, row


@pytest.mark.parametrize(
    ("fault", "said"),
    [
        ("link", "missing.md"),
        ("report", "no heading 'nowhere'"),
    ],
)
def test_a_fault_in_the_sources_fails_the_build(tmp_path: Path, fault: str, said: str) -> None:
    """A link to no page, a report section that is not there."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ROOT / "mkdocs.yml", src)
    shutil.copytree(ROOT / "docs", src / "docs")
    for entry in ("examples", "README.md"):
        (src / entry).symlink_to(ROOT / entry)
    docs = src / "docs"
    assert build(src, tmp_path / "clean").returncode == 0, "the unbroken copy builds"
    if fault == "link":
        index = docs / "index.md"
        index.write_text(index.read_text() + "\nSee [the missing page](missing.md).\n")
    else:
        perf = docs / "performance.md"
        perf.write_text(perf.read_text().replace("#drain -->", "#nowhere -->"))
    done = build(src, tmp_path / "site")
    assert done.returncode != 0
    assert said in done.stderr, done.stderr[-3000:]


def test_the_readme_fits_a_screen_and_links_to_pages_that_exist() -> None:
    """Under 200 lines; each of its links into docs/ names a page of the site (and its heading)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 200
    links = re.findall(r"\]\((docs/[^)#]+)(?:#([^)]+))?\)", readme)
    assert len({target for target, _ in links}) >= 15
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for target, anchor in links:
        assert (ROOT / target).is_file() and target.removeprefix("docs/") in nav, target
        if anchor:
            headings = re.findall(r"^#+ (.+)$", (ROOT / target).read_text(encoding="utf-8"), re.M)
            slugs = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}
            assert anchor in slugs, (target, anchor)
