"""One exception base: every error class the packages define is a ``BusError``, so a caller
catches the bus's errors in one ``except``; producer/errors.py documents the kernel's tree."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest
import redis

import producer
from producer import errors
from producer.errors import BusError

PACKAGES = ("producer", "consumers", "web", "loadtest")
# Modules not imported here: locust's users patch the whole process with gevent on import, and
# a package's __main__ runs its command.
SKIPPED = ("loadtest.locustfile", "loadtest.users", "loadtest.shapes")


def modules() -> list[ModuleType]:
    """Every module of the packages but the skipped ones (walked without importing those)."""
    found: list[ModuleType] = []

    def walk(module: ModuleType) -> None:
        found.append(module)
        for info in pkgutil.iter_modules(getattr(module, "__path__", []), f"{module.__name__}."):
            if not info.name.startswith(SKIPPED) and not info.name.endswith(".__main__"):
                walk(importlib.import_module(info.name))

    for name in PACKAGES:
        walk(importlib.import_module(name))
    return found


def test_every_error_class_of_the_packages_is_a_bus_error() -> None:
    defined = [
        cls
        for module in modules()
        for cls in vars(module).values()
        if inspect.isclass(cls) and issubclass(cls, BaseException)
        and cls.__module__ == module.__name__ and not cls.__name__.startswith("_")
    ]  # fmt: skip
    assert len(defined) >= 20  # the walk found them
    assert [c for c in defined if not issubclass(c, BusError)] == []


def test_the_errors_tree_in_the_docstring_names_every_class_of_errors_py() -> None:
    classes = [
        c for c in vars(errors).values() if inspect.isclass(c) and c.__module__ == errors.__name__
    ]
    for cls in classes:
        assert f" {cls.__name__}" in (errors.__doc__ or ""), cls.__name__


def test_each_error_keeps_the_kind_it_always_had() -> None:
    """Code written against the built-in or redis-py classes still catches them."""
    assert issubclass(errors.SettingsError, ValueError)
    assert issubclass(errors.PayloadError, ValueError)
    assert issubclass(errors.Unconfirmed, redis.ConnectionError)
    assert issubclass(errors.NotReplicated, errors.Unconfirmed)
    assert issubclass(errors.ConfigurationRefused, RuntimeError)


@pytest.mark.parametrize("name", ["BusError", "QueueFull", "Unconfirmed", "SettingsError"])
def test_the_public_api_exports_the_errors_a_producer_meets(name: str) -> None:
    assert getattr(producer, name) is getattr(errors, name)
    assert name in producer.__all__
