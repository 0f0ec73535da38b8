"""A redis-server loaded with the bus's ACL users (scripts/acl.sh, as `make run` uses it)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import redis

from loadtest.harness.server import RedisServer
from tests.procs import ROOT

ACL_SCRIPT = ROOT / "scripts" / "acl.sh"
ROLES = ("web", "worker", "subscriber", "tools", "admin", "locust")


def generate(out_dir: Path, patterns: str = "", template: Path | None = None) -> dict[str, str]:
    """Run ``scripts/acl.sh generate out_dir`` (``patterns``: ACL_PATTERNS, the subscribers'
    --pattern values): role -> its password."""
    env = {**os.environ, "ACL_PATTERNS": patterns}
    if template is not None:
        env["ACL_TEMPLATE"] = str(template)
    subprocess.run(["bash", str(ACL_SCRIPT), "generate", str(out_dir)], check=True, env=env)
    passwords = {}
    for line in (out_dir / "passwords.env").read_text().splitlines():
        name, _, value = line.partition("=")
        passwords[name.removeprefix("ACL_PASSWORD_").lower()] = value
    assert set(passwords) == set(ROLES), passwords
    return passwords


class AclRedis(RedisServer):
    """A redis-server started with ``--aclfile``; :meth:`client` logs in as bus-admin."""

    def __init__(
        self,
        workdir: Path,
        acl_dir: Path,
        passwords: dict[str, str],
        *args: str,
        appendonly: bool = False,
    ) -> None:
        """``args``: more redis-server arguments (they override :class:`RedisServer`'s)."""
        super().__init__(workdir, "--aclfile", str(acl_dir / "users.acl"), *args,
                         appendonly=appendonly)  # fmt: skip
        self.passwords = passwords

    def url_for(self, role: str) -> str:
        """The BUS_REDIS_URL of ``role``: its user and password."""
        return f"redis://bus-{role}:{self.passwords[role]}@127.0.0.1:{self.port}/0"

    def client(self, **kwargs: object) -> redis.Redis:
        kwargs.setdefault("username", "bus-admin")
        kwargs.setdefault("password", self.passwords["admin"])
        return super().client(**kwargs)

    def client_as(self, role: str) -> redis.Redis:
        """A plain client logged in as ``role``'s user."""
        return self.client(username=f"bus-{role}", password=self.passwords[role])
