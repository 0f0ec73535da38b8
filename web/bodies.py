"""The request bodies of ``POST /prodcons`` and ``POST /pubsub`` as JSON Schema, for the
OpenAPI description (web/openapi.py): what the checks of web/message.py accept."""

from __future__ import annotations

import sys
from typing import Any

from producer.settings.checks import MAX_TIMEOUT_S
from producer.store.envelope import MAX_PRIORITY
from producer.store.tracking import MAX_ID_CHARS
from web.message import MAX_DELAY_S, latest_not_before

CUT_SHORT = "a body cut short (fewer bytes than its Content-Length, or no last chunk): nothing sent"


def digits(text: str) -> str:
    """``text`` with ``{}`` set to the limit on an integer's digits (Python's
    int_max_str_digits, see web.limits.load_json); "" when there is no limit."""
    limit = sys.get_int_max_str_digits()
    return text.format(limit) if limit else ""


def message_body(dest: str, names: tuple[str, ...], extra: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = {
        "payload": {
            "description": "any JSON value: the message's content"
            + digits(" (integers of at most {} digits)")
        },
        dest: {"type": "string", "enum": list(names), "default": names[0]},
        **extra,
    }
    schema = {
        "type": "object",
        "properties": props,
        "required": ["payload"],
        "additionalProperties": False,
    }
    if "delay_s" in extra:  # one or the other; a message that waits for others is not delayed
        schema["allOf"] = [
            {"if": {"required": ["delay_s"]}, "then": {"properties": {"not_before": False}}},
            {
                "if": {"required": ["after"], "properties": {"after": {"type": "array"}}},
                "then": {
                    "properties": {
                        "delay_s": False,
                        "not_before": False,
                        "track": {"enum": [True, None]},
                    }
                },
            },
        ]
    return schema


def form_body(dest: str, names: tuple[str, ...]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "payload": {
                "type": "string",
                "description": "strict JSON is sent as that value, anything else as a string",
            },
            dest: {"enum": ["", *names], "description": f"empty: the first {dest}"},
        },
        "required": ["payload"],
    }


MESSAGE_ID = {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS,
              "pattern": "^[^\\u0000-\\u001f]+$"}  # fmt: skip


def push_fields(queues: tuple[str, ...]) -> dict[str, Any]:
    """What a push may carry beside its payload and queue (``queues``: those ``after`` may
    name)."""
    latest = latest_not_before()
    return {
        "delay_s": {
            "type": "number",
            "minimum": 0,
            "maximum": MAX_DELAY_S,
            "description": "seconds from now (Redis's clock)",
        },
        "not_before": {
            "type": "number",
            "minimum": 0,
            "maximum": latest,
            "description": "Unix time, seconds",
        },
        "track": {
            "type": ["boolean", "null"],
            "description": "keep a status record (null: as BUS_TRACK_QUEUES says)",
        },
        "timeout_s": {
            "type": ["number", "null"],
            "exclusiveMinimum": 0,
            "maximum": MAX_TIMEOUT_S,
            "description": "the message's own time limit in the worker, seconds, in place of "
            "BUS_HANDLER_TIMEOUT_S (null: that setting): a handler still running past it has "
            "failed the attempt (retried, dead-lettered at BUS_MAX_ATTEMPTS)",
        },
        "priority": {
            "type": ["integer", "null"],
            "minimum": 0,
            "maximum": MAX_PRIORITY,
            "description": "the message's level in the queue, 0 (the default; also null) to 9 "
            "(the highest): a worker takes the highest level that holds a message first, the "
            "oldest first within a level",
        },
        "after": {
            "type": ["array", "null"],
            "minItems": 1,
            "items": {
                "oneOf": [
                    MESSAGE_ID,
                    {
                        "type": "object",
                        "properties": {
                            "queue": {"type": "string", "enum": list(queues)},
                            "id": MESSAGE_ID,
                        },
                        "required": ["id"],
                        "additionalProperties": False,
                    },
                ]
            },
            "description": "the messages this one waits for (an id: of its own queue), each a "
            "tracked message: it is tracked, waits aside until every one is handled, then is "
            "pending; dead-lettered or cancelled if one of them ends so. Not with delay_s or "
            "not_before",
        },
    }
