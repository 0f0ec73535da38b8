"""schemathesis's command line, with hypothesis's lambda descriptions kept short.

Hypothesis describes a lambda by parsing its source with ``ast.parse``; deep in a draw, Python
3.11's parser can fail there with ``SystemError: AST constructor recursion depth mismatch``
(CPython gh-106905, fixed in later releases), which schemathesis reports as a runtime error of
the operation it was testing. The description only names a strategy in messages, so it is
replaced by a fixed one; the values drawn are the same.
"""

from __future__ import annotations

import sys

from hypothesis.internal import lambda_sources
from schemathesis.cli import schemathesis


def _short(f: object) -> str:
    return "lambda: ..."


if __name__ == "__main__":
    lambda_sources.lambda_description = _short  # type: ignore[assignment]
    sys.exit(schemathesis())
