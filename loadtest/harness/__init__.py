"""The one harness of the tests, the load-test runner and the bench: redis-server processes (one
server, a Sentinel set-up, a Redis Cluster) on free loopback ports, and bounded waits.

- :mod:`loadtest.harness.ports`: free loopback ports.
- :mod:`loadtest.harness.waits`: poll a condition until it holds, with a deadline and a failure
  that names what was awaited.
- :mod:`loadtest.harness.answers`: whether a web server answers (an HTTP status, 0 for none).
- :mod:`loadtest.harness.procs`: end a child that leads its own session (SIGTERM, a bounded
  wait, SIGKILL).
- :mod:`loadtest.harness.server`: one redis-server (start, stop, kill -9, SIGSTOP, restart), and
  :class:`~loadtest.harness.server.Topology`, servers that start and end together.
- :mod:`loadtest.harness.sentinel`: a primary, a replica and three sentinels.
- :mod:`loadtest.harness.cluster`: a Redis Cluster of redis-servers of its own.
- :mod:`loadtest.harness.slots`: a cluster as its nodes' ports: create it, tell when its nodes
  agree, fail a shard over (for clusters whose processes someone else runs).
"""
