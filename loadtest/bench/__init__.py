"""``make bench`` (``python -m loadtest.bench``): redis-bus measured beside its references and
peers in one run, so the ratios hold on a shared, noisy machine.

Every section starts its own processes on free loopback ports and returns :class:`Result` rows;
:mod:`loadtest.bench.table` prints them grouped by section, each with its ratio to the
reference row the section names, and writes ``loadtest/reports/bench-<timestamp>.json`` and
``.md``. Nothing here imports locust, the consumers or the web: they run as subprocesses, as
users run them.
"""
