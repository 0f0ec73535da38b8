"""The locust users of ``loadtest/locustfile.py`` and what they use: the HTTP and direct Redis
users, their options and event hooks, the ledger lines they write (:mod:`.sending`), and the
bus's own figures beside locust's (:mod:`.busfigures`, :mod:`.busmonitor`)."""
