"""Refusals that mean the configuration is wrong, not that Redis is away: a certificate that does
not verify, a login Redis refuses, a user not allowed what a role needs, a client name Redis
refuses, sentinels that refuse their login (``BUS_SENTINEL_USERNAME``). Before its first
connection a daemon stops on one (exit 78, naming the setting); a tool exits with the same
line."""

from __future__ import annotations

import re
import ssl
from urllib.parse import unquote, urlsplit

import redis
from redis.sentinel import MasterNotFoundError

from producer import Settings


def certificate_refused(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) says the server's certificate did not verify."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) or "certificate verify failed" in str(
            seen
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# What redis-py's errors say (it drops Redis's error code) when Redis refuses a login: a wrong
# password, an unknown or disabled user (WRONGPASS), no password where one is required
# (NOAUTH), a password where none is configured. Matched in the text too: a cluster client
# reports its nodes' errors in one ConnectionError.
_LOGIN_REFUSED = (
    "invalid username-password pair",
    "Authentication required",
    "called without any password configured",
    "Client sent AUTH, but no password is set",
    "invalid password",
)
_NAME_REFUSED = "Client names cannot contain"
_NO_PERMISSION = "has no permissions to run"
# redis-py's MasterNotFoundError names each sentinel it asked by its client's whole repr, then
# " - " and what that sentinel answered (after a category: "auth:AuthenticationError: ...").
_SENTINEL_ANSWER = re.compile(r"\)>\)>\)> - (?:\w+:)?(.*?)(?=, <redis\.client\.Redis\(|$)")


def configuration_refused(
    exc: BaseException, settings: Settings, role: str, name: str | None = None
) -> str | None:
    """If ``exc`` (or what it wraps) says Redis refused the configuration rather than failed to
    answer: one line naming the setting to fix (never the password), for a ``role`` (a worker,
    a tool) of ``name`` (a daemon's ``--name``). None otherwise."""
    where = settings.redis_url_redacted
    seen: BaseException | None = exc
    while seen is not None:
        detail = _masked(" ".join(str(seen).split()), settings)
        if isinstance(seen, MasterNotFoundError):
            refused = _sentinels_refused(detail, settings, role)
            if refused:
                return refused
            seen = seen.__cause__ or seen.__context__
            continue
        if isinstance(seen, redis.AuthenticationError) or any(s in detail for s in _LOGIN_REFUSED):
            return (
                f"Redis at {where} refused the login of {_user(settings)}: {detail} (check "
                "the user and password in BUS_REDIS_URL)"
            )
        if isinstance(seen, redis.exceptions.NoPermissionError) or _NO_PERMISSION in detail:
            return (
                f"Redis at {where} does not allow {_user(settings)} what {role} needs: "
                f"{detail} (check the user in BUS_REDIS_URL and its ACL rules; "
                "deploy/redis/users.acl gives each role what it needs)"
            )
        if _NAME_REFUSED in detail and name is not None:
            return (
                f"Redis at {where} refused the client name of --name {name!r}: {detail} "
                "(--name takes printable ASCII without spaces)"
            )
        seen = seen.__cause__ or seen.__context__
    return None


def _sentinels_refused(detail: str, settings: Settings, role: str) -> str | None:
    """The line for sentinels that refused to say where the primary is because of the login
    or the rules of ``BUS_SENTINEL_USERNAME`` (their own ACL); None for sentinels away or not
    knowing the primary (retried)."""
    answers = list(dict.fromkeys(_SENTINEL_ANSWER.findall(detail)))  # each different one once
    said = "; ".join(answers) or detail
    where = f"the sentinels at {','.join(settings.sentinels)}"
    user = settings.sentinel_username
    who = f"user {user!r}" if user else "the default user"
    if any(s in detail for s in _LOGIN_REFUSED):
        return (
            f"{where} refused the login of {who}: {said} (check BUS_SENTINEL_USERNAME and "
            "BUS_SENTINEL_PASSWORD, the sentinels' own users)"
        )
    if _NO_PERMISSION in detail:
        return (
            f"{where} do not allow {who} what {role} asks them: {said} (check "
            "BUS_SENTINEL_USERNAME and its rules on the sentinels: SENTINEL MASTERS)"
        )
    return None


def _user(settings: Settings) -> str:
    user = urlsplit(settings.redis_url).username
    return f"user {unquote(user)!r}" if user else "the default user"


def _masked(text: str, settings: Settings) -> str:
    """``text`` with BUS_REDIS_URL's password masked, should an error ever quote it."""
    password = urlsplit(settings.redis_url).password
    secrets = {password, unquote(password)} if password else set()
    for secret in secrets | ({settings.sentinel_password} - {""}):
        text = text.replace(secret, "***")
    return text
