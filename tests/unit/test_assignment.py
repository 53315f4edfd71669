"""Several backup servers (issue 14): each backup server makes accounts only
for the servers assigned to it, the same choice the ext_pillar gives the
servers (tests/unit/test_ext_pillar.py). Plain data: the settings a backup
server's pillar gives it, no Salt loader."""

import logging

import snap_core
from snap_core import mod_server
from snap_core.mod_env import ModuleEnv

BACKUPS = {"backup1": {"host": "10.0.0.1"}, "backup2": {"host": "10.0.0.2"}}
IDS = [f"web{i}.example.com" for i in range(200)]


def env(me, **snap):
    context = {"snap.settings": {"server": {}, **snap}}
    return ModuleEnv(salt={}, opts={"id": me}, grains={}, context=context, log=logging.getLogger("test"))


def test_each_backup_server_takes_exactly_its_own_servers():
    one, two = env("backup1", backup_servers=BACKUPS), env("backup2", backup_servers=BACKUPS)
    mine1 = {m for m in IDS if mod_server.assigned_here(one, m)}
    mine2 = {m for m in IDS if mod_server.assigned_here(two, m)}
    assert mine1 and mine2 and not mine1 & mine2 and mine1 | mine2 == set(IDS)
    assert all(snap_core.assign_backup_server(m, ["backup1", "backup2"]) == "backup1" for m in mine1)


def test_one_backup_server_takes_everything_and_the_explicit_map_wins():
    assert all(mod_server.assigned_here(env("backup1"), m) for m in IDS)
    m = next(m for m in IDS if snap_core.assign_backup_server(m, ["backup1", "backup2"]) == "backup1")
    moved = {"assignment": {m: "backup2"}, "backup_servers": BACKUPS}
    assert not mod_server.assigned_here(env("backup1", **moved), m)
    assert mod_server.assigned_here(env("backup2", **moved), m)
    # Sent to a backup server nobody names: no account anywhere (its own
    # pillar fails, naming it); a malformed id is left for validate_mine.
    lost = {"assignment": {m: "backup9"}, "backup_servers": BACKUPS}
    assert not mod_server.assigned_here(env("backup1", **lost), m)
    assert not mod_server.assigned_here(env("backup2", **lost), m)
    assert mod_server.assigned_here(env("backup1", backup_servers=BACKUPS), "bad id!")


def test_no_backup_server_is_ever_another_ones_server_and_odd_config_reads_alike():
    """Cold attack on f165d9f, finding 1: the hash sent backup2 to backup1,
    so a compromised backup2 publishing a snap key got a push account (a
    login) on backup1. And finding 7: integer ids in YAML read alike on both
    sides."""
    for me in BACKUPS:
        assert not any(mod_server.assigned_here(env(me, backup_servers=BACKUPS), b) for b in BACKUPS)
    numeric = {"backup_servers": {**BACKUPS, 12345: {"host": "h"}}, "assignment": {678: "backup2"}}
    assert mod_server.assigned_here(env("backup2", **numeric), "678")
    assert not mod_server.assigned_here(env("12345", **numeric), "678")


def test_status_of_one_backup_server_judges_only_its_own_servers():
    """Cold attack on f165d9f, finding 4: `status tgt=backup1` marked every
    server of backup2 SUSPECT (no receipts on backup1) and alerted for each."""
    from tests.support.loader_modules import load

    runner = load("runners")
    pillar = {"snap": {"backup_servers": BACKUPS}}
    minions = ["backup2", *IDS]
    ones = runner._servers_of("backup1", pillar, minions)
    twos = runner._servers_of("backup2", pillar, minions)
    assert "backup2" not in ones and "backup1" not in twos
    assert sorted(ones + twos) == sorted(IDS) and not set(ones) & set(twos)
    assert runner._servers_of("backup1", {"snap": {}}, minions) == minions
