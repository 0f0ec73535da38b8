"""Watching the bus: each process's counters (:mod:`.stats`), the bus-wide totals and their
history (:mod:`.totals`), the overview the web and ``consumers status`` show (:mod:`.overview`),
which processes are alive (:mod:`.liveness`), and the daemons' log format (:mod:`.logs`)."""
