"""The JSON schemas of the API's answers: ``components/schemas`` of ``/openapi.json``
(:mod:`web.openapi` refers to them by name)."""

from __future__ import annotations

from typing import Any


def ref(name: str) -> dict[str, str]:
    """A reference to the schema ``name``."""
    return {"$ref": f"#/components/schemas/{name}"}


SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "properties": {
            "error": {"type": "string"},
            "status": {"type": "integer"},
            "outcome": {"enum": ["rejected", "unknown"], "description": "503: was it sent?"},
        },
        "required": ["error", "status"],
    },
    "Pushed": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
            "queue": {"type": "string"},
            "depth": {"type": "integer", "minimum": 1},
            "scheduled": {"type": "integer", "minimum": 1},
            "due_ms": {"type": "integer"},
            "src": {"type": "string"},
            "seq": {"type": "integer", "minimum": 1},
            "waiting_for": {
                "type": "integer",
                "minimum": 0,
                "description": "pushed with after: how many of those it still waits for (0: "
                "they were handled already, it is pending)",
            },
            "tracked": {"const": True},
            "repeat": {"const": True},
        },
        "required": ["id", "queue", "src", "seq"],
        "oneOf": [
            {"required": ["depth"]},
            {"required": ["scheduled", "due_ms"]},
            {"required": ["waiting_for", "tracked"]},
        ],
    },
    "Published": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
            "channel": {"type": "string"},
            "receivers": {"type": "integer", "minimum": 0},
            "src": {"type": "string"},
            "seq": {"type": "integer", "minimum": 1},
            "repeat": {"const": True},
        },
        "required": ["id", "channel", "receivers", "src", "seq"],
    },
    "Record": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "queue": {"type": "string"},
            "state": {
                "enum": [
                    "waiting",
                    "scheduled",
                    "pending",
                    "in-flight",
                    "retrying",
                    "handled",
                    "dead",
                    "cancelled",
                ]
            },
            "attempt": {"type": ["integer", "null"]},
            "expires_in_ms": {"type": "integer"},
        },
        "required": ["state"],
    },
    "DeadLetters": {
        "type": "object",
        "properties": {
            "queue": {"type": "string"},
            "total": {"type": "integer", "minimum": 0},
            "entries": {"type": "array", "items": {"type": "object"}},
        },
        "required": ["queue", "total", "entries"],
    },
    "Requeued": {
        "type": "object",
        "properties": {
            "queue": {"type": "string"},
            "requeued": {"type": "integer", "minimum": 0},
            "kept": {"type": "integer", "minimum": 0},
        },
        "required": ["queue", "requeued", "kept"],
    },
    "Cancelled": {
        "type": "object",
        "description": "what a cancel did: cancelled (it waited: it will not be delivered), "
        "signalled (in a handler's hands: Context.cancelled, not retried) or finished (handled, "
        "dead or cancelled already: nothing done); state: the one it was in",
        "properties": {
            "id": {"type": "string"},
            "queue": {"type": "string"},
            "outcome": {"enum": ["cancelled", "signalled", "finished"]},
            "state": {"type": "string"},
            "meaning": {"type": "string"},
        },
        "required": ["id", "queue", "outcome", "state", "meaning"],
    },
    "Worker": {
        "type": "object",
        "description": "see docs/watching.md, /api/stats; the in-hand fields (slots to "
        "abandoned) only for a live worker that reports them",
        "properties": {
            "queue": {"type": "string"},
            "name": {"type": "string"},
            "state": {"enum": ["alive", "dead", "stopped"]},
            "timed_out": {"type": "integer", "minimum": 0},
            "slots": {"type": "integer", "minimum": 0},
            "busy": {"type": "integer", "minimum": 0},
            "oldest_age_ms": {"type": "integer", "minimum": 0},
            "oldest_limit_ms": {"type": "integer", "minimum": 0},
            "overdue": {"type": "boolean"},
            "abandoned": {"type": "integer", "minimum": 0},
        },
        "required": ["queue", "name", "state"],
    },
    "Overview": {
        "type": "object",
        "description": "see docs/watching.md, /api/stats",
        "properties": {
            "now_ms": {"type": "integer"},
            "redis_ms": {"type": "integer"},
            "queues": {"type": "object"},
            "channels": {"type": "object"},
            "workers": {"type": "array", "items": ref("Worker")},
            "subscribers": {"type": "array"},
            "producers": {"type": "array"},
            "processes": {"type": "array"},
        },
        "required": [
            "now_ms",
            "redis_ms",
            "queues",
            "channels",
            "workers",
            "subscribers",
            "producers",
            "processes",
        ],
    },
    "History": {
        "type": "object",
        "properties": {"series": {"type": "array"}, "points": {"type": "array"}},
        "required": ["series", "points"],
    },
}
