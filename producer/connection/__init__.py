"""Connections: redis-py clients made per role (deadlines, keepalive, TLS, Sentinel), the
cluster client, the reconnect backoff, and the subscriber's bulk reader. The only package that
knows redis-py's internals: an upgrade of redis-py touches only this folder."""
