"""Where the README's tests import the harness from; the harness is :mod:`loadtest.harness`."""

from loadtest.harness.ports import free_port as free_port
from loadtest.harness.server import RedisServer as RedisServer
from loadtest.harness.server import redis_binary as redis_binary
