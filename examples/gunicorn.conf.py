"""gunicorn's settings for the example app (``make example``)."""

import os

bind = os.environ.get("EXAMPLE_BIND", "127.0.0.1:8001")
workers = 2  # forked after the app is loaded: each builds its own producer on first use
accesslog = "-"
control_socket_disable = True  # gunicorn 25+: one fixed path per user would clash with make run
