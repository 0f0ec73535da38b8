"""The OpenAPI 3.1 description of every endpoint, served at ``/openapi.json``.

Built from the settings (the queues and channels the web accepts are enums) and the clock (a
``not_before`` is at most a year from now), so what it says valid the app accepts, and what
it says invalid the app refuses with a 4xx. ``tests/test_openapi.py`` checks that it names
every route of the app and nothing else, and runs schemathesis against the app under gunicorn.
"""

from __future__ import annotations

from typing import Any

from producer import Settings
from web.bodies import CUT_SHORT, MESSAGE_ID, digits, form_body, message_body, push_fields
from web.schemas import SCHEMAS, ref

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(ref("Error"), description)


def _retry_later(description: str) -> dict[str, Any]:
    answer = _error(description)
    answer["headers"] = {"Retry-After": {"schema": {"type": "string", "pattern": "^[0-9]+$"}}}
    return answer


SEE_OTHER = {
    "description": "sent; back to the index page (a form, a plain GET)",
    "headers": {"Location": {"schema": {"type": "string"}}},
}
UNAVAILABLE = _retry_later(
    "Redis unreachable, slow, full, busy or loading, or the cluster reconfiguring: retry "
    "after Retry-After; `outcome` says whether the message may have been accepted"
)
TOO_LARGE = _error("the body is larger than BUS_MAX_PAYLOAD_BYTES")


MSG_ID = {
    "name": "msg_id",
    "in": "path",
    "required": True,
    "schema": MESSAGE_ID,
}
# The answers of /api/messages/{msg_id} but its 200 (GET and DELETE).
NO_MESSAGE = {
    "400": _error("not a message id"),
    "404": _error("no record (never tracked, unknown, expired), or an unknown queue"),
    "503": UNAVAILABLE,
}
QUEUE_ONLY = "a timeout_s or a priority (they apply to queue messages only), "


IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
    "description": "send at most once within BUS_IDEMPOTENCY_WINDOW_S: a repeat with the same "
    'key and request sends nothing and answers the first one\'s 202 with "repeat": true; the '
    "key with another request answers 409",
}


def _send(
    dest: str, names: tuple[str, ...], extra: dict[str, Any], accepted: str, summary: str
) -> dict[str, Any]:
    return {
        "summary": summary,
        "parameters": [IDEMPOTENCY_KEY],
        "requestBody": {
            "required": True,
            "content": {
                JSON: {"schema": message_body(dest, names, extra)},
                FORM: {"schema": form_body(dest, names)},
            },
        },
        "responses": {
            "202": _json(ref(accepted), "accepted"),
            "303": SEE_OTHER,
            "400": _error(
                "not JSON, not an object, a field missing, unknown or of the wrong type, "
                + (QUEUE_ONLY if dest == "channel" else "")
                + digits("an integer of more than {} digits, ")
                + "an Idempotency-Key that is empty, longer than 255 characters or not "
                "printable ASCII, " + f"or {CUT_SHORT}"
            ),
            "404": _error(
                f"a {dest} the web does not accept (the answer lists those it does)"
                + (
                    "; or after names a message with no record (never pushed, not tracked, "
                    "or expired): nothing was sent, missing lists them"
                    if dest == "queue"
                    else ""
                )
            ),
            "413": TOO_LARGE,
            "409": _error(
                "the Idempotency-Key was used within its window for another request (another "
                "payload or options): nothing was sent"
            ),
            **(
                {"429": _retry_later("the queue is at BUS_MAX_QUEUE_DEPTH")}
                if dest == "queue"
                else {}
            ),
            "503": UNAVAILABLE,
        },
    }


def _seed_get(what: str) -> dict[str, Any]:
    return {
        "summary": f"{what} a random number, as the seed articles' endpoints did",
        "responses": {"303": SEE_OTHER, "503": UNAVAILABLE},
    }


def _queue_param(queues: tuple[str, ...]) -> dict[str, Any]:
    return {
        "name": "queue",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": list(queues)},
    }


def _int_query(name: str, low: int, high: int, default: int) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": low, "maximum": high, "default": default},
    }


def describe(settings: Settings) -> dict[str, Any]:
    """The description of the app that ``settings`` configure, as JSON-ready data."""
    push_extra = push_fields(settings.queues)
    queue = _queue_param(settings.queues)
    paths: dict[str, Any] = {
        "/prodcons": {
            "post": _send("queue", settings.queues, push_extra, "Pushed", "push one message"),
            "get": _seed_get("push"),
        },
        "/pubsub": {
            "post": _send("channel", settings.channels, {}, "Published", "publish one message"),
            "get": _seed_get("publish"),
        },
        "/": {
            "get": {
                "summary": "the dashboard",
                "responses": {
                    "200": {
                        "description": "the page",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/api/stats": {
            "get": {
                "summary": "the bus at a glance",
                "responses": {
                    "200": _json(ref("Overview"), "queues, channels, processes, totals"),
                    "503": UNAVAILABLE,
                },
            }
        },
        "/api/history": {
            "get": {
                "summary": "bus-wide rates of the last minutes",
                "responses": {"200": _json(ref("History"), "samples"), "503": UNAVAILABLE},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus text format",
                "responses": {
                    "200": {
                        "description": "metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "503": UNAVAILABLE,
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "the process is up",
                "responses": {"200": _json({"type": "object", "required": ["status"]}, "up")},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Redis answers PING",
                "responses": {
                    "200": _json({"type": "object", "required": ["status", "redis"]}, "ready"),
                    "503": _retry_later("Redis does not answer"),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "this description",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
            }
        },
        "/api/messages/{msg_id}": {
            "get": {
                "summary": "a tracked message's record",
                "parameters": [MSG_ID, {**queue, "in": "query", "required": False}],
                "responses": {"200": _json(ref("Record"), "the record"), **NO_MESSAGE},
            },
            "delete": {
                "summary": "cancel a tracked message",
                "parameters": [MSG_ID, {**queue, "in": "query", "required": False}],
                "responses": {"200": _json(ref("Cancelled"), "what was done"), **NO_MESSAGE},
            },
        },
        "/api/queues/{queue}/dead": {
            "get": {
                "summary": "a page of dead letters, newest first",
                "parameters": [
                    queue,
                    _int_query("start", 0, 10**9, 0),
                    _int_query("count", 1, 1000, 100),
                ],
                "responses": {
                    "200": _json(ref("DeadLetters"), "the page"),
                    "400": _error("start or count out of range"),
                    "404": _error("an unknown queue"),
                    "503": UNAVAILABLE,
                },
            }
        },
        "/api/queues/{queue}/dead/requeue": {
            "post": {
                "summary": "push dead letters back as first attempts",
                "parameters": [queue],
                "requestBody": {
                    "required": False,
                    "content": {
                        JSON: {
                            "schema": {
                                "type": "object",
                                "properties": {"count": {"type": "integer", "minimum": 1}},
                                "additionalProperties": False,
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json(ref("Requeued"), "done"),
                    "400": _error(
                        'the body is not empty or {"count": <positive integer>}, or ' + CUT_SHORT
                    ),
                    "404": _error("an unknown queue"),
                    "413": TOO_LARGE,
                    "503": UNAVAILABLE,
                },
            }
        },
    }
    components: dict[str, Any] = {"schemas": SCHEMAS}
    if settings.api_token:
        _guard(paths, components)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "redis-bus",
            "version": "1",
            "description": "HTTP producers and the bus's JSON API (see docs/http-api.md).",
        },
        "paths": paths,
        "components": components,
    }


def _guard(paths: dict[str, Any], components: dict[str, Any]) -> None:
    """With BUS_API_TOKEN: what changes the bus needs the bearer token (401 without it), and
    the seed-style GETs answer 403."""
    components["securitySchemes"] = {"token": {"type": "http", "scheme": "bearer"}}
    for path, method in GUARDED:
        operation = paths[path][method]
        operation["security"] = [{"token": []}]
        operation["responses"]["401"] = _error("no API token, or another one")
        form = operation.get("requestBody", {}).get("content", {}).get(FORM)
        if form:  # the page without JavaScript sends it as a field
            form["schema"]["properties"]["token"] = {"type": "string"}
    for path in ("/prodcons", "/pubsub"):
        paths[path]["get"]["responses"] = {
            "403": _error("sending with GET is off while BUS_API_TOKEN is set")
        }


# The operations that need the token when one is set (web.auth).
GUARDED = (
    ("/prodcons", "post"),
    ("/pubsub", "post"),
    ("/api/queues/{queue}/dead/requeue", "post"),
    ("/api/messages/{msg_id}", "delete"),
)
