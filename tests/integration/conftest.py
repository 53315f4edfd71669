"""Integration tier: one real salt-master and minions web1, db1, backup1 on
127.0.0.1 for the whole package (pytest-salt-factories), the backup server's
real sshd on a loopback port, real rsync and rsnapshot."""

import pytest

from tests.support.fleet import Fleet
from tests.support.pushing import push, rotate


@pytest.fixture(scope="package")
def fleet(salt_factories, salt_factories_root):
    with Fleet(salt_factories, salt_factories_root / "fleet") as running:
        yield running


@pytest.fixture(scope="package")
def deployed(fleet):
    """The fleet after its first setup (see Fleet.deploy), with those runs."""
    return fleet, fleet.deploy()


@pytest.fixture(scope="package")
def pushed(deployed):
    """Both servers pushed once and the history rotated once."""
    fleet, _ = deployed
    for minion_id in fleet.clients:
        push(fleet, minion_id)
    rec = rotate(fleet)
    assert rec["result"] == "ok", rec
    return fleet
