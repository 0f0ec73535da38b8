"""Whether a web server answers: the HTTP status of one request, 0 when nothing answers."""

from __future__ import annotations

import urllib.error
import urllib.request


def http_status(request: str | urllib.request.Request, timeout_s: float = 2.0) -> int:
    """The status code of ``request`` (a URL: a GET); 0 when nothing answers in ``timeout_s``."""
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0
