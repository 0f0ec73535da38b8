"""redis-bus web: the HTTP producers (/prodcons, /pubsub), the JSON API and the index page."""

from __future__ import annotations

import os

from flask import Flask

from producer import Settings
from web import api, errors, ingest
from web.bus import Bus
from web.headers import secure_headers
from web.limits import BodyReader, refuse_unread


def create_app(settings: Settings | None = None) -> Flask:
    """The Flask app; ``settings`` default to the ``BUS_*`` environment."""
    settings = settings or Settings.from_env(os.environ)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_payload_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    bus = app.extensions["bus"] = Bus(settings)
    errors.register(app)
    refuse_unread(app)
    secure_headers(app)
    app.register_blueprint(ingest.bp)  # /prodcons and /pubsub
    app.register_blueprint(api.bp)
    # WSGI middleware, outermost last: a JSON POST to /prodcons or /pubsub is answered by
    # ingest's fast case ahead of Flask, once BodyReader has read its body whole.
    app.wsgi_app = ingest.FastPost(app, app.wsgi_app, bus)  # type: ignore[method-assign]
    app.wsgi_app = BodyReader(app.wsgi_app, settings.max_payload_bytes)  # type: ignore[method-assign]
    return app
