"""The users that send with the project's :class:`~producer.Producer` straight to Redis
(``RedisPush``, ``RedisPublish``), reported to locust as ``LPUSH`` / ``PUBLISH``."""

from __future__ import annotations

import time

import redis
from gevent import GreenletExit
from locust import User, tag, task

from loadtest.ledger import records
from loadtest.users.base import DEFAULT_REDIS_URL, Sending, generator, option
from loadtest.users.sending import sent_line, short
from producer import QueueFull, Unconfirmed, keys
from producer.connection.client import drop_connections


class _Direct(Sending, User):
    """Sends with the project's Producer straight to Redis; reports each call to locust."""

    abstract = True
    mode, dest_field, command = "prodcons", "queue", "LPUSH"

    def send(self) -> None:
        dest, lid = self.next_message()
        producer = generator.producer(str(option(self.environment, "redis_url", DEFAULT_REDIS_URL)))
        payload = records.payload(lid, int(option(self.environment, "payload_bytes", 0)))
        key = keys.pending(dest) if self.mode == "prodcons" else keys.channel(dest)
        t0, started = records.now(), time.perf_counter()
        exc: Exception | None = None
        length, fields = 0, {}  # what the ledger says when it raised
        try:
            if self.mode == "prodcons":
                sent = producer.push(payload, dest)
            else:
                sent = producer.publish(payload, dest)
            envelope, length = sent.envelope, len(sent.envelope.encode())
            rc = sent.result if self.mode == "pubsub" else None
            fields = {"out": "accepted", "id": envelope.id, "src": envelope.src,
                      "seq": envelope.seq, "rc": rc}  # fmt: skip
        except Unconfirmed as e:  # sent, reply lost: it may have run
            exc, fields = e, {"out": "unknown", "err": short(e)}
        except (redis.RedisError, QueueFull) as e:  # surely not sent
            exc, fields = e, {"out": "rejected", "err": short(e)}
        except GreenletExit:
            # A connection abandoned mid-reply went back to the pool: drop the idle ones.
            drop_connections(producer.client, inuse_connections=False)
            generator.record(**sent_line("bus", self.mode, "redis", dest, lid, t0,
                                         err="aborted"))  # fmt: skip
            raise
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.environment.events.request.fire(
            request_type=self.command, name=key, response_time=elapsed_ms,
            response_length=length, exception=exc, context={},
        )  # fmt: skip
        generator.record(**sent_line("bus", self.mode, "redis", dest, lid, t0, **fields))


class RedisPush(_Direct):
    """Producer.push straight to Redis (LPUSH onto ``bus:{q}:pending``)."""

    @tag("prodcons")
    @task
    def lpush(self) -> None:
        self.send()


class RedisPublish(_Direct):
    """Producer.publish straight to Redis (PUBLISH on ``bus:ch:<channel>``)."""

    mode, dest_field, command = "pubsub", "channel", "PUBLISH"

    @tag("pubsub")
    @task
    def publish(self) -> None:
        self.send()
