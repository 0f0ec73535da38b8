"""Flask's hooks and web/ingest.py's fast case: it stands for the hooks create_app installs, and
steps aside for any other, so a hook added to the app runs on every POST, 202s included."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import pytest
import redis
from flask import Blueprint, Flask, Response
from flask.signals import request_finished, request_started

from producer import Settings
from tests.webapp import MakeApp
from web.ingest import STANDS_FOR, FastPost

PENDING = "bus:{default}:pending"
VARIES = ("id", "src", "depth", "scheduled", "due_ms")  # per message, per process, per time


def flask_calls(app: Flask, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the requests the fast case hands to Flask, from now on."""
    fast = app.wsgi_app.app  # type: ignore[attr-defined]
    assert isinstance(fast, FastPost)
    calls: list[str] = []
    inner = fast.wsgi_app

    def counted(environ: dict[str, Any], start_response: Any) -> Any:
        calls.append(environ["PATH_INFO"])
        return inner(environ, start_response)

    monkeypatch.setattr(fast, "wsgi_app", counted)
    return calls


def hooks_of(app: Flask) -> list[Callable[..., Any]]:
    """Every function the app runs on a request, in the tables Flask keeps them in."""
    tables = (app.before_request_funcs, app.after_request_funcs, app.teardown_request_funcs,
              app.url_value_preprocessors)  # fmt: skip
    return [hook for table in tables for hooks in table.values() for hook in hooks]


def test_the_fast_case_stands_for_exactly_the_hooks_create_app_installs(
    make_app: MakeApp, settings: Settings
) -> None:
    app = make_app(settings)
    assert sorted(h.__name__ for h in hooks_of(app)) == sorted(h.__name__ for h in STANDS_FOR)
    assert set(hooks_of(app)) == set(STANDS_FOR) and not app.teardown_appcontext_funcs
    assert app.wsgi_app.app.only_known_hooks()  # type: ignore[attr-defined]


def _before(app: Flask, ran: list[str], stack: ExitStack) -> None:
    @app.before_request
    def hook() -> None:
        ran.append("before")


def _after(app: Flask, ran: list[str], stack: ExitStack) -> None:
    @app.after_request
    def hook(response: Response) -> Response:
        ran.append("after")
        response.headers["X-Hooked"] = "yes"
        return response


def _teardown(app: Flask, ran: list[str], stack: ExitStack) -> None:
    app.teardown_request(lambda exc: ran.append("teardown"))


def _url_values(app: Flask, ran: list[str], stack: ExitStack) -> None:
    app.url_value_preprocessor(lambda endpoint, values: ran.append("url_values"))


def _appcontext_teardown(app: Flask, ran: list[str], stack: ExitStack) -> None:
    app.teardown_appcontext(lambda exc: ran.append("appcontext"))


def _blueprint_before(app: Flask, ran: list[str], stack: ExitStack) -> None:
    extension = Blueprint("extension", __name__)

    @extension.before_app_request
    def hook() -> None:
        ran.append("blueprint")

    app.register_blueprint(extension)


def _started_signal(app: Flask, ran: list[str], stack: ExitStack) -> None:
    def receiver(sender: Flask, **extra: Any) -> None:
        ran.append("started")

    stack.enter_context(request_started.connected_to(receiver, app))


def _finished_signal(app: Flask, ran: list[str], stack: ExitStack) -> None:
    def receiver(sender: Flask, **extra: Any) -> None:
        ran.append("finished")

    stack.enter_context(request_finished.connected_to(receiver, app))


@pytest.mark.parametrize(
    "add_hook",
    [
        _before,
        _after,
        _teardown,
        _url_values,
        _appcontext_teardown,
        _blueprint_before,
        _started_signal,
        _finished_signal,
    ],
)
def test_a_hook_added_to_the_app_runs_on_every_post(
    make_app: MakeApp,
    settings: Settings,
    r: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    add_hook: Callable[[Flask, list[str], ExitStack], None],
) -> None:
    """Added after create_app, as an extension would: every JSON POST then goes to Flask,
    which runs the hook and answers the 202 exactly as the fast case did."""
    app = make_app(settings)
    calls = flask_calls(app, monkeypatch)
    c = app.test_client()
    assert c.post("/prodcons", json={"payload": 0}).status_code == 202
    assert calls == []  # the fast case, before the hook
    ran: list[str] = []
    with ExitStack() as stack:
        add_hook(app, ran, stack)
        assert not app.wsgi_app.app.only_known_hooks()  # type: ignore[attr-defined]
        for path, body in (("/prodcons", {"payload": 1}), ("/pubsub", {"payload": 2}),
                           ("/prodcons", {"payload": 3, "delay_s": 60})):  # fmt: skip
            resp = c.post(path, json=body)
            assert resp.status_code == 202, resp.get_data(as_text=True)
            assert resp.headers["Cache-Control"] == "no-store"
            if add_hook is _after:
                assert resp.headers["X-Hooked"] == "yes"
    assert calls == ["/prodcons", "/pubsub", "/prodcons"]
    assert len(ran) == 3 and len(set(ran)) == 1, ran
    assert r.llen(PENDING) == 2


def test_a_hook_the_app_had_when_the_fast_case_was_mounted_keeps_it_aside(
    make_app: MakeApp, settings: Settings, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hook registered ahead of FastPost (as create_app would if it gained one) is not taken
    as one the fast case stands for: every POST goes to Flask, which runs it."""
    app = make_app(settings)
    ran: list[str] = []
    app.before_request(lambda: ran.append("before"))  # type: ignore[func-returns-value]
    app.wsgi_app.app = FastPost(app, app.wsgi_app.app.wsgi_app, app.extensions["bus"])  # type: ignore[attr-defined]
    calls = flask_calls(app, monkeypatch)
    assert app.test_client().post("/prodcons", json={"payload": 1}).status_code == 202
    assert calls == ["/prodcons"] and ran == ["before"] and r.llen(PENDING) == 1


def test_a_hook_removed_from_the_app_sends_posts_to_flask(
    make_app: MakeApp, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without web.headers' hook, Flask's 202 has no Cache-Control: nor has the fast case's,
    which steps aside rather than add the headers of an app that no longer does."""
    app = make_app(settings)
    calls = flask_calls(app, monkeypatch)
    app.after_request_funcs[None].clear()
    resp = app.test_client().post("/prodcons", json={"payload": 1})
    assert resp.status_code == 202 and "Cache-Control" not in resp.headers
    assert calls == ["/prodcons"]


def test_a_send_that_fails_is_answered_in_place_by_flask(
    make_app: MakeApp, settings: Settings, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused push (429) is answered by Flask's error handler and hooks without Flask's
    request being run again: nothing is sent twice."""
    app = make_app(settings.replace(max_queue_depth=1))
    calls = flask_calls(app, monkeypatch)
    c = app.test_client()
    assert c.post("/prodcons", json={"payload": 1}).status_code == 202
    resp = c.post("/prodcons", json={"payload": 2})
    assert resp.status_code == 429 and resp.get_json()["outcome"] == "rejected"
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert calls == [] and r.llen(PENDING) == 1


@pytest.mark.parametrize(
    "body",
    [{"payload": 1, "delay_s": 30}, {"payload": 1, "track": True},
     {"payload": "x", "not_before": time.time() + 120, "track": False, "queue": "default"}],
)  # fmt: skip
def test_delayed_and_tracked_posts_take_the_fast_case_as_flask_answers_them(
    make_app: MakeApp, settings: Settings, monkeypatch: pytest.MonkeyPatch, body: dict[str, Any]
) -> None:
    fast = make_app(settings)
    slow = make_app(settings)
    slow.wsgi_app.app = slow.wsgi_app.app.wsgi_app  # type: ignore[attr-defined]
    calls = flask_calls(fast, monkeypatch)
    answers = []
    for app in (fast, slow):
        resp = app.test_client().post("/prodcons", json=body)
        got = resp.get_json()
        assert resp.status_code == 202, got
        due_s = body.get("not_before", time.time() + body.get("delay_s", 0))
        if "due_ms" in got:
            assert abs(got["due_ms"] / 1000 - due_s) < 5
        shown = [(k, type(v).__name__ if k in VARIES else v) for k, v in got.items()]
        headers = [h for h in resp.headers if h[0] != "Content-Length"]
        answers.append((resp.status, shown, headers))
    assert calls == []
    assert answers[0] == answers[1]
