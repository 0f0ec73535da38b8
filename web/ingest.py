"""``/prodcons`` and ``/pubsub``: the HTTP producers, one path in for every message.

POST with a JSON body ``{"payload": <any JSON>, "queue"|"channel": <optional name>}`` answers
202 with the message id, what Redis said (queue depth, or receivers: 0 means nobody heard it),
and the envelope's ``src`` and ``seq``. ``/prodcons`` also takes ``"delay_s"`` (seconds from
now) or ``"not_before"`` (Unix time, seconds): the message waits in ``bus:{q}:delayed`` until
then, and the answer says ``"scheduled"`` (how many wait) and ``"due_ms"`` instead of the depth;
``"track": true``: the bus keeps a status record of the message (``GET /api/messages/<id>``),
and the answer says ``"tracked": true`` (queues in ``BUS_TRACK_QUEUES`` track every message);
and ``"timeout_s"``: the message's own time limit in the worker, seconds (> 0, at most 7
days), in place of ``BUS_HANDLER_TIMEOUT_S``; ``"priority"``: its level in the queue, 0 (the
default) to 9 (the highest), where a worker takes the highest level first. ``/pubsub`` refuses a
``"timeout_s"`` or a ``"priority"`` (400): a subscriber has no time limit and no order but the
channel's. An ``Idempotency-Key`` header makes a push or a publish at most
once within ``BUS_IDEMPOTENCY_WINDOW_S`` (:mod:`producer.store.once`): a repeat answers 202
with the first one's answer and ``"repeat": true``, sending nothing; the key with another
request answers 409.
A form POST (the index page without JavaScript) and a plain GET (any HTTP load tool, a link)
send a message too and redirect (303) to ``/``, as the seed articles' endpoints did.

Every message goes through :func:`send`: the checks, the producer, the 202's body. Two callers:

- the Flask views of :data:`bp`, for every request;
- :class:`FastPost`, WSGI middleware that ``create_app`` mounts ahead of Flask, for the case
  that matters for throughput: a JSON POST. Profiled under gunicorn (sync workers, wrk),
  Flask's request context, routing and response object cost each POST about as much CPU as its
  own Redis round trip. It answers the 202 itself, with the bytes Flask would write and
  :data:`web.headers.API_HEADERS`, and hands everything else to Flask: other methods and paths,
  forms, a body that is missing, cut short, too long or not JSON, and a message :func:`send`
  refuses (nothing was sent: Flask refuses it again and says why). When the send itself fails,
  Flask's error handlers answer that error in place, as they answer a view's: nothing is sent
  twice.

Flask's hooks: the fast case runs none of them. It stands for the three that ``create_app``
installs (:data:`STANDS_FOR` says how), and takes a request only while the app's hooks are
exactly those. Once any other is registered (a ``before_request``, ``after_request``,
``teardown_request``, ``url_value_preprocessor`` or ``teardown_appcontext`` function, the app's
or a blueprint's, or a receiver of ``request_started`` or ``request_finished``), or one of
those is removed, it steps aside: every request goes to Flask, which runs the hooks.
"""

from __future__ import annotations

import copy
import io
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, redirect, request
from flask.signals import request_finished, request_started
from flask.typing import ResponseReturnValue

from producer import Sent
from web.auth import bearer, require_token, same_token
from web.bus import Bus, get_bus
from web.errors import BadMessage, no_empty_segment
from web.headers import API_HEADERS, add_secure_headers
from web.limits import UNREAD, load_json, refuse_partial_body
from web.message import (
    PUSH_FIELDS,
    check_after,
    check_body,
    check_delay,
    check_key,
    check_priority,
    check_timeout,
    check_track,
    form_value,
    refuse_queue_options,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

bp = Blueprint("ingest", __name__)
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


@dataclass(frozen=True)
class Route:
    """One producer endpoint: the field that names the destination, the one that says what
    Redis answered, and the other fields a message may carry."""

    dest_field: str
    result_field: str
    extras: tuple[str, ...]


PRODCONS = Route("queue", "depth", PUSH_FIELDS)
PUBSUB = Route("channel", "receivers", ())
ROUTES = {"/prodcons": PRODCONS, "/pubsub": PUBSUB}
PUSH_OPTIONS = frozenset(PUSH_FIELDS)
IDEMPOTENCY_KEY = "Idempotency-Key"


@bp.get("/prodcons")
def prodcons_get() -> ResponseReturnValue:
    """Push a random number onto the default queue and go back to the index page."""
    bus = get_bus()
    _no_seed_get(bus.settings.api_token)
    bus.get_producer().push(random.randint(0, 1_000_000), bus.settings.queues[0])
    return redirect("/", 303)


@bp.get("/pubsub")
def pubsub_get() -> ResponseReturnValue:
    """Publish a random number on the default channel and go back to the index page."""
    bus = get_bus()
    _no_seed_get(bus.settings.api_token)
    bus.get_producer().publish(random.randint(0, 1_000_000), bus.settings.channels[0])
    return redirect("/", 303)


@bp.post("/prodcons")
def prodcons_post() -> ResponseReturnValue:
    """LPUSH one message; 202 ``{"id", "queue", "depth", "src", "seq"}`` (and ``"tracked":
    true`` for a tracked one)."""
    return _post(PRODCONS)


@bp.post("/pubsub")
def pubsub_post() -> ResponseReturnValue:
    """PUBLISH one message; 202 ``{"id", "channel", "receivers", "src", "seq"}`` (receivers 0:
    nobody received it)."""
    return _post(PUBSUB)


def _post(route: Route) -> ResponseReturnValue:
    bus = get_bus()
    require_token(bus.settings.api_token, form_field=True)
    key = check_key(request.headers.get(IDEMPOTENCY_KEY))
    body, from_form = _read_body(route.dest_field)
    answer = send(bus, route, body, key)
    return redirect("/", 303) if from_form else (answer, 202)


def _read_body(dest_field: str) -> tuple[Any, bool]:
    """The request's body as a message request, and whether it came from a form."""
    raw = request.get_data(cache=True)  # 413 past MAX_CONTENT_LENGTH
    if request.mimetype in FORM_TYPES and "payload" in request.form:
        body = {"payload": form_value(request.form["payload"])}
        if request.form.get(dest_field):
            body[dest_field] = request.form[dest_field]
        return body, True
    return load_json(raw), False


def _no_seed_get(token: str) -> None:
    if token:
        raise BadMessage(
            403,
            "sending with GET is off while BUS_API_TOKEN is set (a link could send): POST with "
            "the token",
        )


def send(bus: Bus, route: Route, body: Any, key: str | None = None) -> dict[str, Any]:
    """Check a parsed request body and send its message (a push with an idempotency ``key``:
    at most once in the key's window): the 202's body. Every refusal (:class:`BadMessage`) is
    raised before anything is sent; any other error is the send's."""
    settings = bus.settings
    if route is PUBSUB:
        refuse_queue_options(body)  # said as such, not as more unknown fields
        payload, name = check_body(body, route.dest_field, settings.channels, route.extras)
        return accepted(route, name, bus.get_producer().publish(payload, name, key=key))
    payload, name = check_body(body, route.dest_field, settings.queues, route.extras)
    if key is None and PUSH_OPTIONS.isdisjoint(body):  # most pushes: nothing else to check
        return accepted(route, name, bus.get_producer().push(payload, name))
    track = check_track(body)
    timeout_s = check_timeout(body)
    priority = check_priority(body)
    needs = check_after(body, name, settings.queues)
    if needs is not None:
        sent = bus.get_producer().push(payload, name, timeout_s=timeout_s, priority=priority,
                                       after=needs, key=key)  # fmt: skip
        env = sent.envelope
        answer = {"id": env.id, "queue": name, "waiting_for": sent.result, "tracked": True,
                  "src": env.src, "seq": env.seq}  # fmt: skip
        if sent.repeat:
            answer["repeat"] = True
        return answer
    delay = check_delay(body)
    sent = bus.get_producer().push(payload, name, track=track, timeout_s=timeout_s,
                                   delay_s=delay.get("delay_s"), priority=priority,
                                   not_before=delay.get("not_before"), key=key)  # fmt: skip
    if not delay:
        return accepted(route, name, sent)
    env = sent.envelope
    answer = {"id": env.id, "queue": name, "scheduled": sent.result, "due_ms": sent.due_ms,
              "src": env.src, "seq": env.seq}  # fmt: skip
    if env.track:
        answer["tracked"] = True
    if sent.repeat:
        answer["repeat"] = True
    return answer


def accepted(route: Route, name: str, sent: Sent) -> dict[str, Any]:
    """The 202's body: the message id, where it went, what Redis said (``depth`` or
    ``receivers``), and the envelope's ``src`` and ``seq``: what a subscriber's gap count
    refers to."""
    env = sent.envelope
    answer = {"id": env.id, route.dest_field: name, route.result_field: sent.result,
              "src": env.src, "seq": env.seq}  # fmt: skip
    if env.track:
        answer["tracked"] = True
    if sent.repeat:  # an idempotency key used before: nothing was sent now
        answer["repeat"] = True
    return answer


# The hooks create_app installs, and what the fast case does instead of each.
STANDS_FOR = {
    no_empty_segment: "it takes only the paths /prodcons and /pubsub, written as they are",
    refuse_partial_body: "it takes only a body that web.limits.BodyReader read whole",
    add_secure_headers: "its 202 carries web.headers.API_HEADERS, as the hook adds them",
}


def hook_tables(app: Flask) -> tuple[Any, ...]:
    """Where Flask keeps the functions it runs around a request: dicts of lists by blueprint
    (None: the app's), then the list of teardown_appcontext ones."""
    return (app.before_request_funcs, app.after_request_funcs, app.teardown_request_funcs,
            app.url_value_preprocessors, app.teardown_appcontext_funcs)  # fmt: skip


class FastPost:
    """WSGI middleware ahead of the app's own ``wsgi_app``: a JSON POST to ``/prodcons`` or
    ``/pubsub`` goes through :func:`send` without Flask's request machinery, unless the app has
    a hook this does not stand for (see the module docstring)."""

    def __init__(self, app: Flask, wsgi_app: WSGIApplication, bus: Bus) -> None:
        self.app = app
        self.wsgi_app = wsgi_app
        self.bus = bus
        self.max_bytes = int(app.config["MAX_CONTENT_LENGTH"])
        # The hooks as mounted, if each is one this stands for; else None: never fast.
        tables = hook_tables(app)
        mounted = [h for t in tables[:-1] for hooks in t.values() for h in hooks] + tables[-1]
        self.hooks = copy.deepcopy(tables) if all(h in STANDS_FOR for h in mounted) else None
        provider: Any = app.json
        # Flask's JSON answers, compact (outside debug mode) and newline-terminated.
        self.encoder = json.JSONEncoder(
            ensure_ascii=provider.ensure_ascii, sort_keys=provider.sort_keys, separators=(",", ":")
        )

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        route = ROUTES.get(environ.get("PATH_INFO", ""))
        if route is None or not self._takes(environ) or not self.only_known_hooks():
            return self.wsgi_app(environ, start_response)
        raw = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
        environ["wsgi.input"] = io.BytesIO(raw)  # Flask reads it again if it answers
        try:
            parsed = json.loads(raw)
        except (ValueError, RecursionError):  # not JSON: Flask says why
            return self.wsgi_app(environ, start_response)
        try:
            answer = send(self.bus, route, parsed)
        except BadMessage:  # refused, nothing sent: Flask refuses it again and says why
            return self.wsgi_app(environ, start_response)
        except Exception as exc:  # the send's own error
            return self._flask_answers(exc, environ, start_response)
        body = (self.encoder.encode(answer) + "\n").encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                   *API_HEADERS]  # fmt: skip
        start_response("202 ACCEPTED", headers)
        return [body]

    def _takes(self, environ: WSGIEnvironment) -> bool:
        """Whether this is a POST of a whole body, not a form, carrying the token if one is
        set, to an app that answers compact JSON."""
        if (
            environ.get("REQUEST_METHOD") != "POST"
            or "HTTP_TRANSFER_ENCODING" in environ
            or "HTTP_IDEMPOTENCY_KEY" in environ  # Flask reads and checks the header
            or UNREAD in environ
            or self.app.debug  # Flask indents its JSON then, or when told to
            or getattr(self.app.json, "compact", None) is False
        ):
            return False
        token = self.bus.settings.api_token
        if token and not same_token(bearer(environ.get("HTTP_AUTHORIZATION")), token):
            return False  # Flask answers the 401, or takes a form's token field
        try:
            length = int(environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            return False
        mimetype = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
        return 0 < length <= self.max_bytes and mimetype not in FORM_TYPES

    def only_known_hooks(self) -> bool:
        """Whether the app's hooks are those it had when this was mounted, each one in
        :data:`STANDS_FOR`."""
        app = self.app
        return (
            self.hooks == hook_tables(app)
            and not request_started.has_receivers_for(app)
            and not request_finished.has_receivers_for(app)
        )

    def _flask_answers(
        self, exc: Exception, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        """Flask's answer to ``exc``, made as Flask makes it when a view raises: its error
        handlers, then its after_request hooks."""
        with self.app.request_context(environ):
            response = self.app.finalize_request(self.app.handle_user_exception(exc))
        return response(environ, start_response)
