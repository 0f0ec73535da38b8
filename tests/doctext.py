"""What the README and the docs pages show: their shell commands and Python blocks, as the tests
that run them read them.

The documents are README.md and every page of the site, ``docs/*.md`` (the saved reports under
``docs/reports/`` are output, not instructions). A shell command is one line of a ```sh block,
without its trailing comment (two spaces or more, then ``#``), joined with the lines it
continues onto (a trailing ``\\``).
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from tests.procs import ROOT

DOCUMENTS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
# ... and the example's, whose shell commands are run as the others' are.
SHELL_DOCUMENTS = (*DOCUMENTS, ROOT / "examples" / "README.md")


def text_of(name: str) -> str:
    """The text of one document: ``README.md`` or a page's name, e.g. ``python.md``."""
    path = ROOT / name if name == "README.md" else ROOT / "docs" / name
    return path.read_text(encoding="utf-8")


def all_text() -> str:
    """Every document, one after the other."""
    return "\n".join(path.read_text(encoding="utf-8") for path in SHELL_DOCUMENTS)


def fenced(text: str, lang: str) -> list[str]:
    """The bodies of the ```<lang> blocks of ``text``, in order (a block indented in a list
    item, dedented)."""
    found = re.findall(rf"^( *)```{lang}\n(.*?)^\1```", text, re.S | re.M)
    return [textwrap.dedent(body) if indent else body for indent, body in found]


def command_of(line: str) -> str:
    """A shell line without its trailing comment (two spaces or more, then '#')."""
    return re.split(r"\s{2,}#", line)[0].strip()


def sh_blocks(text: str) -> list[list[str]]:
    """The ```sh blocks of ``text``, each as its lines without trailing comments."""
    return [[command_of(line) for line in b.splitlines()] for b in fenced(text, "sh")]


def commands(block: list[str]) -> list[str]:
    """The commands of a block: comment and blank lines dropped, continued lines joined."""
    found: list[str] = []
    continued = False
    for line in block:
        if not line or line.startswith("#"):
            continue
        if continued:
            found[-1] = found[-1].removesuffix("\\").rstrip() + " " + line
        else:
            found.append(line)
        continued = line.endswith("\\")
    return found


def shown_commands() -> dict[str, list[Path]]:
    """Every shell command any document shows, with the documents that show it."""
    shown: dict[str, list[Path]] = {}
    for path in SHELL_DOCUMENTS:
        for block in sh_blocks(path.read_text(encoding="utf-8")):
            for command in commands(block):
                shown.setdefault(command, []).append(path)
    return shown
