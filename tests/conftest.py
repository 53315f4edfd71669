"""Shared test configuration.

Tiers (like saltext-vault): ``tests/unit`` calls the core and the loader
modules directly; ``tests/functional`` runs the real Salt loaders in-process
(no daemons); ``tests/integration`` starts a real salt-master and minions on
127.0.0.1 with pytest-salt-factories.
"""

import logging
import pathlib

import pytest

from tests.support import loopback

loopback.install()

REPO = pathlib.Path(__file__).resolve().parent.parent


def pytest_unconfigure(config):
    # Salt installs a deferred log handler that flushes into pytest's closed
    # stderr at exit and buries the summary line in tracebacks (FIELD-NOTES).
    logging.raiseExceptions = False
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler).__name__ in ("DeferredStreamHandler", "TemporaryLoggingHandler"):
            root.removeHandler(handler)


@pytest.fixture(scope="session")
def repo():
    return REPO


@pytest.fixture(scope="session")
def salt_factories_config():
    # Stop daemons at once instead of waiting on a slow SIGTERM (FIELD-NOTES: halves teardown).
    return {"slow_stop": False}
