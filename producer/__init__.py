"""redis-bus's kernel: what every process of the bus shares, and the public Python API.

Layers, each importing only those below it:

``producer.connection``  redis-py clients per role (TLS, Sentinel, Cluster), reconnect backoff,
                         the subscriber's bulk reader: the only code that knows redis-py's
                         internals
``producer.store``       the key schema, the envelope, every Lua script and what runs them
                         (message records, a queue's balance, dead letters)
``producer.observe``     counters, totals and their history, the bus overview, liveness
``producer.producer``    :class:`Producer`: push and publish

:mod:`producer.settings` (the ``BUS_*`` settings) and :mod:`producer.errors` (every error of
the bus, under :class:`BusError`) sit beside them. Imports neither Flask nor locust;
``consumers``, ``web`` and ``loadtest`` build on it.
"""

from producer.connection.backoff import Backoff
from producer.connection.client import make_client
from producer.errors import (
    BusError,
    EnvelopeError,
    IdempotencyConflict,
    NotReplicated,
    PayloadError,
    QueueFull,
    SettingsError,
    Unconfirmed,
    UnknownPrerequisite,
)
from producer.flows import Group, Step
from producer.producer import Producer, Sent
from producer.settings import Settings
from producer.store import keys
from producer.store.envelope import Envelope, decode, encode
from producer.store.envelope import new as new_envelope
from producer.store.tracking import Cancellation

__all__ = [
    "Backoff",
    "BusError",
    "Cancellation",
    "Envelope",
    "EnvelopeError",
    "Group",
    "IdempotencyConflict",
    "NotReplicated",
    "PayloadError",
    "Producer",
    "QueueFull",
    "Sent",
    "Settings",
    "SettingsError",
    "Step",
    "Unconfirmed",
    "UnknownPrerequisite",
    "decode",
    "encode",
    "keys",
    "make_client",
    "new_envelope",
]
