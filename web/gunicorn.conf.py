"""gunicorn settings for the web producers: ``gunicorn -c web/gunicorn.conf.py web.wsgi:app``.

Loopback bind and worker count come from ``BUS_WEB_BIND`` / ``BUS_WEB_WORKERS`` (default 4).
Sync workers: each request costs one short Redis round trip, and on a 2-core machine sync
workers gave the POST endpoints a p99 about half of gthread's for the same throughput, with 4
workers ahead of 2 (see docs/performance.md).
"""

import os

from producer import Settings

_settings = Settings.from_env(os.environ)

bind = _settings.web_bind
workers = _settings.web_workers
worker_class = "sync"
timeout = 30  # a worker silent this long is killed and replaced
graceful_timeout = 10  # SIGTERM: requests in progress get this long to finish
keepalive = 2
accesslog = None
errorlog = "-"
loglevel = "info"
proc_name = "redis-bus-web"
control_socket_disable = True  # one fixed path per user would clash between several stacks
