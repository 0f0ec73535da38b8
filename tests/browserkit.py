"""The dashboard in a real browser: a live stack (redis-server, gunicorn, daemons) and Debian's
headless chromium driven through Debian's chromedriver.

The page re-renders its tables every second, so element handles go stale; everything here reads
the page with one script call at a time (a table row as ``{header: text}``), and waits with
:func:`tests.procs.wait_for`. The browser's console is collected as it is read
(``driver.get_log`` drains it), so no entry is missed between two checks.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select

from loadtest.harness.server import RedisServer, redis_binary
from loadtest.harness.waits import wait_for
from tests.conftest import QUICK_ENV
from tests.procs import ROOT, Proc, daemon_cmd, project_env, read_records
from tests.webapp import start_gunicorn

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = ROOT / "tests" / "artifacts"
RECORD = "tests.handlers_for_tests:record"
FAIL = "tests.handlers_for_tests:fail_always"
WORK = "tests.handlers_for_tests:work"  # records like RECORD; reports progress, returns a result

# The stack's settings: the quick ones of the fault tests (heartbeat every 0.5 s, TTL 3 s,
# stats every 0.1 s), a reaper pass every 0.5 s, two queues and two attempts before the dead list.
STACK_ENV = {
    **QUICK_ENV,
    "BUS_REAPER_INTERVAL_S": "0.5",
    "BUS_QUEUES": "default,jobs",
    "BUS_MAX_ATTEMPTS": "2",
    "BUS_WEB_WORKERS": "2",
}
HEARTBEAT_TTL_S = float(STACK_ENV["BUS_HEARTBEAT_TTL_S"])

ROW_JS = """
const [table, attrs] = arguments;
const match = Object.entries(attrs).map(([k, v]) => `[data-${k}="${CSS.escape(v)}"]`).join("");
const tr = document.querySelector(`#${table} tbody tr${match}`);
if (!tr) return null;
const heads = [...document.querySelectorAll(`#${table} thead th`)].map((th) => th.textContent);
return Object.fromEntries(heads.map((h, i) => [h, tr.cells[i] ? tr.cells[i].textContent : ""]));
"""

TRACKED_JS = """
const box = document.getElementById("tracked");
const text = (id) => document.getElementById(id).textContent;
return {hidden: box.hidden, id: box.dataset.id || "", queue: box.dataset.queue || "",
        state: box.dataset.state || "", final: box.dataset.final === "true",
        watching: box.dataset.watching === "true", shown_id: text("tracked-id"),
        shown_state: text("tracked-state"), attempt: text("tracked-attempt"),
        worker: text("tracked-worker"),
        fraction: document.getElementById("tracked-progress").dataset.fraction,
        percent: text("tracked-percent"), text: text("tracked-text"),
        outcome: text("tracked-outcome")};
"""


def require_tools() -> None:
    """Fail (never skip) when the browser, its driver or redis-server is missing."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found: the dashboard test needs Debian's chromium and "
            "its driver: `apt-get install chromium chromium-driver` (scripts/bootstrap.sh "
            "installs them when run as root)"
        )
    if redis_binary() is None:
        pytest.fail("redis-server is not installed: `make bootstrap` installs it")


def number(text: str) -> int:
    """A count as the page formats it (``1,234``)."""
    return int(text.replace(",", ""))


@dataclass
class Daemon:
    """A ``python -m consumers`` process and the file its test handler records to."""

    name: str
    proc: Proc
    records: Path

    def handled_ids(self) -> set[str]:
        return {r["id"] for r in read_records(self.records) if r["event"] == "handled"}

    def kill(self) -> None:
        """kill -9: no goodbye, no last heartbeat."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)


@dataclass
class Stack:
    """redis-server, gunicorn serving ``web.wsgi:app`` and the daemons, in ``workdir``."""

    workdir: Path
    redis: RedisServer
    gunicorn: Proc
    base: str
    daemons: list[Daemon] = field(default_factory=list)

    def start(self, kind: str, name: str, *args: str, handler: str = RECORD, **env: str) -> Daemon:
        """Start ``python -m consumers KIND --name NAME --handler HANDLER ARGS`` (``env``: more
        settings)."""
        records = self.workdir / f"{name}.jsonl"
        env = project_env(self.redis.url, **{**STACK_ENV, **env}, TEST_BUS_RECORD=str(records))
        cmd = daemon_cmd(kind, "--name", name, "--handler", handler, *args)
        daemon = Daemon(name, Proc(cmd, env, self.workdir / f"{name}.log"), records)
        self.daemons.append(daemon)
        return daemon

    def daemon(self, name: str) -> Daemon:
        return next(d for d in self.daemons if d.name == name)

    def stop(self) -> None:
        """The daemons (SIGTERM, then SIGKILL), gunicorn, then Redis; each whatever came before."""
        with contextlib.ExitStack() as stops:
            stops.callback(self.redis.stop)
            stops.callback(self.gunicorn.stop)
            for d in self.daemons:
                stops.callback(d.proc.stop)


@contextlib.contextmanager
def live_stack(workdir: Path, **web_env: str) -> Iterator[Stack]:
    """A stack of this test's own (``web_env``: more settings for gunicorn); every process is
    stopped on the way out, whatever happened."""
    server = RedisServer(workdir / "redis").start()
    try:
        env = {**STACK_ENV, **web_env}
        gunicorn, base = start_gunicorn(server.url, workdir / "gunicorn.log", **env)
    except BaseException:
        server.stop()
        raise
    stack = Stack(workdir, server, gunicorn, base)
    try:
        yield stack
    finally:
        stack.stop()


class Browser:
    """One headless chromium on the dashboard."""

    def __init__(self, driver: webdriver.Chrome, base: str) -> None:
        self.driver = driver
        self.base = base
        self.console: list[dict[str, Any]] = []

    def open(self) -> None:
        """Load the dashboard and wait for its first render of /api/stats."""
        self.driver.get(self.base + "/")
        wait_for(lambda: self.text("status").startswith("updated"), 10,
                 "the dashboard's first stats", every_s=0.1)  # fmt: skip

    def console_errors(self) -> list[dict[str, Any]]:
        """The SEVERE console entries since the last call (uncaught errors, failed requests)."""
        entries = self.driver.get_log("browser")
        self.console.extend(entries)
        return [e for e in entries if e["level"] == "SEVERE"]

    def text(self, element_id: str) -> str:
        return str(self.driver.execute_script(
            "const e = document.getElementById(arguments[0]); return e ? e.textContent : '';",
            element_id,
        ))  # fmt: skip

    def dead_box(self, queue: str) -> str | None:
        """The text of the dead-letter area of ``queue`` (None when the page has none)."""
        text = self.driver.execute_script(
            'const e = document.querySelector(`#dead .dead-queue[data-queue="${arguments[0]}"]`);'
            "return e && e.textContent;",
            queue,
        )
        return None if text is None else str(text)

    def data(self, element_id: str, name: str) -> str | None:
        """``data-<name>`` of an element (None when it is not set)."""
        value = self.driver.execute_script(
            "const e = document.getElementById(arguments[0]); return e && e.dataset[arguments[1]];",
            element_id,
            name,
        )
        return None if value is None else str(value)

    def row(self, table: str, **attrs: str) -> dict[str, str] | None:
        """The row of table ``#table`` whose data attributes match, as ``{header: cell text}``."""
        row = self.driver.execute_script(ROW_JS, table, attrs)
        return None if row is None else {str(k): str(v) for k, v in row.items()}

    def cell(self, table: str, column: str, **attrs: str) -> str | None:
        row = self.row(table, **attrs)
        return None if row is None else row[column]

    def wait_cell(self, table: str, column: str, want: str, timeout_s: float, **attrs: str) -> None:
        """Wait until the cell shows ``want``; on timeout, say what the row shows."""
        try:
            wait_for(lambda: self.cell(table, column, **attrs) == want, timeout_s,
                     f"#{table} {attrs} {column} = {want!r}", every_s=0.1)  # fmt: skip
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the row shows {self.row(table, **attrs)}") from None

    def select(self, name: str, value: str) -> None:
        """Choose ``value`` in the form field ``<select name=name>``."""
        Select(self.driver.find_element(By.NAME, name)).select_by_visible_text(value)

    def click(self, element_id: str) -> None:
        self.driver.find_element(By.ID, element_id).click()

    def type(self, selector: str, text: str) -> None:
        """Replace what the input ``selector`` (CSS) holds by typing ``text``."""
        field = self.driver.find_element(By.CSS_SELECTOR, selector)
        field.clear()
        field.send_keys(text)

    def tracked(self) -> dict[str, Any]:
        """The tracked message's area (``#tracked``): its data attributes (``state``,
        ``final``, ``watching``), each field's text, and ``fraction``: the progress bar's
        ``data-fraction`` as a float (None before the handler reports)."""
        area = dict(self.driver.execute_script(TRACKED_JS))
        area["fraction"] = float(area["fraction"]) if area["fraction"] else None
        return area

    def send(self, button: str) -> str:
        """Click a send button; returns the new id ``#result`` then shows."""
        before = self.data("result", "id")
        self.click(button)

        def new_id() -> str | None:
            now = self.data("result", "id")
            return now if now and now != before else None

        try:
            return str(wait_for(new_id, 10, f"#result to show the id #{button} sent"))
        except AssertionError as exc:
            raise AssertionError(f"{exc}; #result shows {self.text('result')!r}") from None

    def chart_points(self) -> int:
        """``data-points`` of the chart's canvas: the points drawn (0 before the first draw)."""
        return int(self.data("chart", "points") or 0)

    def screenshot(self, name: str, element_id: str | None = None) -> Path:
        """Save ``tests/artifacts/<name>.png`` (after scrolling ``element_id`` into view)."""
        if element_id:
            self.driver.execute_script(
                "document.getElementById(arguments[0]).scrollIntoView()", element_id
            )
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        assert self.driver.save_screenshot(str(path)), f"screenshot {path} not saved"
        return path


@contextlib.contextmanager
def chromium(base: str) -> Iterator[Browser]:
    """Headless Debian chromium with its console logged; always quit. Everything the console
    logged is saved to ``tests/artifacts/dashboard-console.json``."""
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1800"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    browser = Browser(driver, base)
    try:
        yield browser
    finally:
        with contextlib.suppress(WebDriverException):
            browser.console_errors()  # collect what is left before the browser goes
        driver.quit()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "dashboard-console.json").write_text(json.dumps(browser.console, indent=1))
