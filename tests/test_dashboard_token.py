"""The dashboard in headless chromium when the web needs an API token (``BUS_API_TOKEN``):
the page loads under its Content-Security-Policy without a console error, a send without the
token is refused and says why, and once the token is typed into one form (the other form gets
it too) both buttons send, and the worker handles what was pushed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from loadtest.harness.waits import wait_for
from tests.browserkit import Browser, Stack, chromium, live_stack, require_tools
from tests.procs import get_json

pytestmark = pytest.mark.slow
TOKEN = "dashboard-token-0123456789"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_tools()
    with live_stack(tmp_path_factory.mktemp("dashboard-token"), BUS_API_TOKEN=TOKEN) as s:
        s.start("worker", "w1", "--queue", "default")
        wait_for(lambda: [w["state"] for w in (get_json(s.base + "/api/stats") or {}).get(
            "workers", [])] == ["alive"], 20, "w1 alive", every_s=0.1)  # fmt: skip
        yield s


@pytest.fixture(scope="module")
def browser(stack: Stack) -> Iterator[Browser]:
    with chromium(stack.base) as b:
        yield b


def test_the_buttons_send_once_the_token_is_given(stack: Stack, browser: Browser) -> None:
    browser.open()
    browser.click("send-prodcons")
    wait_for(lambda: browser.text("result").startswith("401: this endpoint needs the API token"),
             5, "the refusal on the page")  # fmt: skip
    browser.type("form[data-mode=prodcons] input.api-token", TOKEN)
    copied = browser.driver.execute_script(
        "return document.querySelector('form[data-mode=pubsub] input.api-token').value"
    )
    assert copied == TOKEN
    pushed = browser.send("send-prodcons")
    published = browser.send("send-pubsub")
    assert pushed != published
    wait_for(lambda: pushed in stack.daemon("w1").handled_ids(), 10, "w1 to handle the push")
    browser.open()  # the tab keeps the token
    assert browser.send("send-prodcons")
    # The one refusal asked for above, and nothing else (a CSP violation would show here).
    errors = [e for e in browser.console_errors() if "status of 401" not in e["message"]]
    assert errors == []
