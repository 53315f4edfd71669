"""Integration tier: one real salt-master and minions web1, db1, backup1 on
127.0.0.1 for the whole package (pytest-salt-factories)."""

import pytest

from tests.support.fleet import Fleet


@pytest.fixture(scope="package")
def fleet(salt_factories, tmp_path_factory):
    with Fleet(salt_factories, tmp_path_factory.mktemp("fleet")) as running:
        yield running


@pytest.fixture(scope="package")
def highstated(fleet):
    """The fleet after its first highstate, with the return of that run."""
    first = fleet.highstate()
    fleet.salt("mine.update")
    return fleet, first
