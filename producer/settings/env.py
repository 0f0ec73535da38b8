"""Reading ``BUS_*`` environment variables: their names and how a value is parsed."""

from __future__ import annotations

from typing import Any

from producer.errors import SettingsError


def env_name(field_name: str) -> str:
    """``block_timeout_s`` -> ``BUS_BLOCK_TIMEOUT_S``."""
    return "BUS_" + field_name.upper()


_BOOLS = {"1": True, "true": True, "yes": True, "on": True,
          "0": False, "false": False, "no": False, "off": False}  # fmt: skip


def parse_value(name: str, type_name: Any, raw: str) -> Any:
    """``raw`` as the field's type (``float``, ``int``, ``bool``, a comma list for tuples)."""
    kind = str(type_name)
    try:
        if kind == "float":
            return float(raw)
        if kind == "int":
            return int(raw)
        if kind == "bool":
            return _BOOLS[raw.lower()]
        if kind.startswith("tuple"):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError:
        raise SettingsError(f"{env_name(name)}={raw!r} is not a valid {kind}") from None
    except KeyError:
        raise SettingsError(
            f"{env_name(name)}={raw!r} is not 1/0, true/false, yes/no, on/off"
        ) from None
    return raw
