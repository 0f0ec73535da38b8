"""MkDocs hook: the pages' generated parts, filled in at build time from their one source.

A page asks for one with a comment on a line of its own:

- ``<!-- generated: settings -->``: the configuration reference, every field of
  ``producer.Settings`` (its variable, type, default and meaning: ``setting(default,
  meaning)``);
- ``<!-- generated: openapi -->``: the HTTP reference, from the app's ``/openapi.json`` (asked of
  ``web.create_app`` through Flask's test client: no Redis needed);
- ``<!-- report: <path under docs/>#<heading> -->``: one section of a saved, dated report, its
  relative links made relative to the page.

Anything missing (a field without a meaning, a meaning without a field, a report or heading
that is not there) fails the build.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

DOCS = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"^<!-- (generated|report): (.+?) -->$", re.M)
LINK = re.compile(r"(!?\[[^\]]*\])\(([^)#:]+?)\)")
METHODS = ("get", "post", "put", "patch", "delete")


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """Replace each marker of ``page`` with what it names."""
    page_dir = Path(page.file.src_uri).parent

    def fill(match: re.Match[str]) -> str:
        kind, arg = match[1], match[2]
        if kind == "report":
            path, _, heading = arg.partition("#")
            return report_section(path, heading, page_dir)
        if arg == "settings":
            return settings_table()
        if arg == "openapi":
            return http_reference()
        raise PluginError(f"{page.file.src_uri}: unknown generated part {arg!r}")

    return MARKER.sub(fill, markdown)


def markdown_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def settings_default(value: object) -> str:
    if value in ("", ()):
        return "(none)"
    if isinstance(value, tuple):
        return f"`{','.join(value)}`"
    if isinstance(value, bool):
        return "`1`" if value else "`0`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    return f"`{value}`"


def settings_table() -> str:
    """Every ``Settings`` field: its variable, field name, type, default and meaning."""
    from producer import Settings
    from producer.settings import env_name

    fields = dataclasses.fields(Settings)
    names = [env_name(f.name) for f in fields]
    missing = [n for f, n in zip(fields, names, strict=True) if not f.metadata.get("meaning")]
    if missing:
        raise PluginError(
            f"producer/settings: no meaning for {missing} (setting(default, meaning))"
        )
    rows = [
        "| variable | `Settings` field | type | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for f, name in zip(fields, names, strict=True):
        kind = str(f.type).replace("tuple[str, ...]", "comma list")
        rows.append(
            f"| `{name}` | `{f.name}` | {kind} | {settings_default(f.default)} "
            f"| {markdown_cell(_linked(f.metadata['meaning']))} |"
        )
    return "\n".join(rows) + "\n"


def _linked(text: str) -> str:
    """``docs/<page>.md`` in a meaning, as a link to that page."""
    return re.sub(r"docs/([\w-]+)\.md", lambda m: f"[{m.group(1)}]({m.group(1)}.md)", text)


def openapi_document() -> dict[str, Any]:
    """The app's ``/openapi.json`` for the default settings."""
    from producer import Settings
    from web import create_app

    app = create_app(Settings())
    answer = app.test_client().get("/openapi.json")
    if answer.status_code != 200:
        raise PluginError(f"/openapi.json answered {answer.status_code}")
    return dict(answer.get_json())


def schema_text(schema: dict[str, Any], doc: dict[str, Any]) -> str:
    """A short type for a JSON schema: its $ref's name, type, enum or bounds."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[`{name}`](#schema-{name.lower()})"
    parts = []
    kind = schema.get("type")
    if kind:
        parts.append(" or ".join(kind) if isinstance(kind, list) else kind)
    if "enum" in schema:
        parts.append("one of " + ", ".join(f"`{json.dumps(v)}`" for v in schema["enum"]))
    for key, word in (("minimum", "≥"), ("maximum", "≤"), ("minLength", "length ≥"),
                      ("maxLength", "length ≤")):  # fmt: skip
        if key in schema:
            parts.append(f"{word} {schema[key]}")
    if "default" in schema:
        parts.append(f"default `{json.dumps(schema['default'])}`")
    if schema.get("description"):
        parts.append(schema["description"])
    return markdown_cell("; ".join(parts)) or "any JSON"


def fields_table(schema: dict[str, Any], doc: dict[str, Any]) -> list[str]:
    props = schema.get("properties") or {}
    if not props:
        return [f"{schema_text(schema, doc)}", ""]
    required = set(schema.get("required", ()))
    rows = ["| field | required | schema |", "|---|---|---|"]
    for name, sub in props.items():
        rows.append(f"| `{name}` | {'yes' if name in required else ''} | {schema_text(sub, doc)} |")
    return [*rows, ""]


def http_reference() -> str:
    """Every operation of ``/openapi.json``: parameters, bodies, answers; then its schemas."""
    doc = openapi_document()
    out = [f"Generated from `/openapi.json` ({doc['info']['title']} {doc['info']['version']}, "
           f"OpenAPI {doc['openapi']}) for the default settings.", ""]  # fmt: skip
    for path, item in doc["paths"].items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            out += [f"### `{method.upper()} {path}`", ""]
            if op.get("summary"):
                out += [op["summary"][:1].upper() + op["summary"][1:] + ".", ""]
            if op.get("description"):
                out += [op["description"], ""]
            if op.get("security"):
                out += ["Requires `Authorization: Bearer <BUS_API_TOKEN>` when a token is set.", ""]
            params = op.get("parameters") or []
            if params:
                out += ["| parameter | in | required | schema |", "|---|---|---|---|"]
                for p in params:
                    schema = {**p.get("schema", {}), "description": p.get("description", "")}
                    out.append(f"| `{p['name']}` | {p['in']} | {'yes' if p.get('required') else ''}"
                               f" | {schema_text(schema, doc)} |")  # fmt: skip
                out.append("")
            for ctype, media in (op.get("requestBody") or {}).get("content", {}).items():
                out += [f"Request body, `{ctype}`:", ""]
                out += fields_table(media.get("schema", {}), doc)
            out += ["| status | answer |", "|---|---|"]
            for status, answer in op.get("responses", {}).items():
                answer = resolve(answer, doc)
                shapes = [
                    f"`{ctype}` {schema_text(media.get('schema', {}), doc)}"
                    if media.get("schema") else f"`{ctype}`"
                    for ctype, media in answer.get("content", {}).items()
                ]  # fmt: skip
                text = markdown_cell(answer.get("description", ""))
                out.append(f"| {status} | {text}{': ' if shapes else ''}{', '.join(shapes)} |")
            out.append("")
    schemas = doc.get("components", {}).get("schemas", {})
    if schemas:
        out += ["## Schemas", ""]
        for name, schema in schemas.items():
            out += [f"### `{name}` {{#schema-{name.lower()}}}", ""]
            if schema.get("description"):
                out += [schema["description"], ""]
            out += fields_table(schema, doc)
    return "\n".join(out) + "\n"


def resolve(obj: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    """``obj``, or what its ``$ref`` names inside ``doc``."""
    while "$ref" in obj:
        node: Any = doc
        for part in obj["$ref"].lstrip("#/").split("/"):
            node = node[part]
        obj = node
    return obj


def report_section(path: str, heading: str, page_dir: Path) -> str:
    """The body of ``heading`` in the report at ``path`` (relative to docs/), links rebased."""
    report = DOCS / path
    if not report.is_file():
        raise PluginError(f"no report {path} under docs/")
    text = report.read_text(encoding="utf-8")
    match = re.search(rf"^(#+) {re.escape(heading)}\n", text, re.M)
    if match is None:
        raise PluginError(f"{path}: no heading {heading!r}")
    level = len(match[1])
    rest = text[match.end() :]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.M)
    body = rest[: end.start()] if end else rest
    base = Path(path).parent

    def rebase(link: re.Match[str]) -> str:
        target = (base / link[2]).as_posix()
        relative = Path(_relative(target, page_dir.as_posix()))
        return f"{link[1]}({relative.as_posix()})"

    return LINK.sub(rebase, body).strip("\n") + "\n"


def _relative(target: str, start: str) -> str:
    import os.path

    return os.path.relpath(target, start or ".")
