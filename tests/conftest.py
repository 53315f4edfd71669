"""Shared test configuration.

Tiers (like saltext-vault): ``tests/unit`` calls the core and the loader
modules directly; ``tests/functional`` runs the real Salt loaders in-process
(no daemons); ``tests/integration`` starts a real salt-master and minions on
127.0.0.1 with pytest-salt-factories.
"""

import logging
import pathlib
import shutil
import tempfile

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


def private_root(prefix: str) -> pathlib.Path:
    """A fresh directory for a throwaway fleet, under /var/lib: sshd's
    StrictModes refuses keys below a world-writable directory such as /tmp."""
    root = pathlib.Path(tempfile.mkdtemp(prefix=prefix, dir="/var/lib"))
    root.chmod(0o711)
    return root


@pytest.fixture(scope="session")
def salt_factories_root():
    """Where salt-factories roots every daemon: private to this run, removed after."""
    root = private_root("snap-tests-")
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def salt_factories_config(salt_factories_root):
    # Stop daemons at once instead of waiting on a slow SIGTERM (FIELD-NOTES: halves teardown).
    return {"slow_stop": False, "root_dir": salt_factories_root}


@pytest.fixture(scope="session")
def ceph():
    """A real Ceph RADOS Gateway on 127.0.0.1 for the whole run (tests/support/ceph.py):
    started once (about 10 s, 140 MB), stopped and removed at the end."""
    from tests.support.ceph import Ceph

    with Ceph() as server:
        yield server
