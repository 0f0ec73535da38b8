"""redis-bus shared kernel: settings, key schema, envelope, clients, backoff, producer, stats.

Imports neither Flask nor locust; ``consumers``, ``web`` and ``loadtest`` build on it.
"""

from producer.backoff import Backoff
from producer.client import make_client
from producer.envelope import Envelope, EnvelopeError, PayloadError, decode, encode
from producer.envelope import new as new_envelope
from producer.producer import NotReplicated, Producer, QueueFull, Sent, Unconfirmed
from producer.settings import Settings, SettingsError

__all__ = [
    "Backoff",
    "Envelope",
    "EnvelopeError",
    "NotReplicated",
    "PayloadError",
    "Producer",
    "QueueFull",
    "Sent",
    "Settings",
    "SettingsError",
    "Unconfirmed",
    "decode",
    "encode",
    "make_client",
    "new_envelope",
]
