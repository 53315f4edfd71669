"""The snap ext_pillar at loader level (dunders injected by pytest-salt-factories)."""

import zlib

import pytest

from tests.support.loader_modules import load

ext = load("pillar")


@pytest.fixture
def configure_loader_modules():
    return {ext: {"__grains__": {"host": "web1", "fqdn": "web1.example.com"}, "__opts__": {}}}


def schedule(minion_id="web1.example.com", pillar=None, **options):
    return ext.ext_pillar(minion_id, pillar or {}, **options)["snap"]["schedule"]


def test_virtual_with_core():
    assert ext.__virtual__() == "snap"


def test_defaults_use_the_minion_id():
    assert schedule() == {
        "minute": zlib.crc32(b"web1.example.com") % 60,
        "second": (zlib.crc32(b"web1.example.com") // 60) % 60,
        "hours": [2, 10, 18],
        "slots": 60,
        "key": "id",
    }


def test_options_and_pillar_override():
    assert schedule(hours=[1, 13], slots=59)["minute"] == zlib.crc32(b"web1.example.com") % 59
    assert schedule(hours=[1, 13])["hours"] == [1, 13]
    own = {"snap": {"schedule": {"hours": [23, 4]}}}
    assert schedule(pillar=own, hours=[1, 13])["hours"] == [4, 23]


def test_hostname_key_uses_the_grain():
    assert schedule(key="hostname")["minute"] == zlib.crc32(b"web1") % 60


@pytest.mark.parametrize(
    "options,message",
    [
        ({"hours": [24]}, "not an hour"),
        ({"hours": []}, "at least one hour"),
        ({"hours": [2, 2]}, "twice"),
        ({"hours": "2,10"}, "list of integers"),
        ({"slots": 0}, "slots"),
        ({"slots": 61}, "slots"),
        ({"slots": True}, "slots"),
        ({"key": "fqdn"}, "key must be"),
        ({"hourz": [1]}, "unknown options"),
    ],
)
def test_bad_options_raise_naming_the_problem(options, message):
    with pytest.raises(ValueError, match=message):
        schedule(**options)


BACKUPS = {"backup1": {"host": "10.0.0.1", "port": 2222}, "backup2": {"host": "10.0.0.2", "host_keys": ["k2"]}}


def assigned(minion_id, **snap):
    return ext.ext_pillar(minion_id, {"snap": snap})["snap"].get("backup_server")


def test_without_several_backup_servers_nothing_is_assigned():
    assert assigned("web1.example.com") is None


def test_every_server_gets_its_backup_server_and_adding_one_moves_only_what_goes_to_it():
    import snap_core

    ids = [f"web{i}.dc{i % 2}.example.com" for i in range(400)]
    two = {m: assigned(m, backup_servers=BACKUPS) for m in ids}
    for m, b in two.items():
        assert b["minion_id"] == snap_core.assign_backup_server(m, ["backup1", "backup2"]), m
        want = BACKUPS[b["minion_id"]]
        assert (b["host"], b["port"], b["host_keys"]) == (want["host"], want.get("port", 22), want.get("host_keys", []))
    counts = {k: sum(b["minion_id"] == k for b in two.values()) for k in BACKUPS}
    assert min(counts.values()) > 150, counts
    three = dict(BACKUPS, backup3={"host": "10.0.0.3"})
    moved = {m for m in ids if assigned(m, backup_servers=three)["minion_id"] != two[m]["minion_id"]}
    assert moved and all(assigned(m, backup_servers=three)["minion_id"] == "backup3" for m in moved)
    assert len(moved) < len(ids) / 2, len(moved)
    # A backup server is its own; the explicit map wins.
    assert assigned("backup2", backup_servers=BACKUPS)["minion_id"] == "backup2"
    m = ids[0]
    other = "backup1" if two[m]["minion_id"] == "backup2" else "backup2"
    assert assigned(m, backup_servers=BACKUPS, assignment={m: other})["minion_id"] == other


def test_a_bad_backup_server_map_or_assignment_is_refused_by_name():
    with pytest.raises(ValueError, match="snap:backup_servers must map"):
        assigned("web1", backup_servers=["backup1"])
    with pytest.raises(ValueError, match="snap:assignment must map"):
        assigned("web1", backup_servers=BACKUPS, assignment=["backup1"])
    with pytest.raises(ValueError, match="backup9"):
        assigned("web1", backup_servers=BACKUPS, assignment={"web1": "backup9"})


def test_integer_ids_in_yaml_read_as_the_backup_servers_read_them():
    numeric = {12345: {"host": "h"}, "backup1": {"host": "b"}}
    assert assigned("678", backup_servers=numeric, assignment={678: "12345"})["host"] == "h"
    assert assigned("12345", backup_servers=numeric)["minion_id"] == "12345"


def test_mine_functions_follow_the_role_so_a_new_backup_server_needs_no_other_change():
    def mine(minion_id, snap):
        return ext.ext_pillar(minion_id, {"snap": snap})["mine_functions"]

    backup = {"snap.hostkey": [], "snap.accounts": []}
    server = {"snap.pubkey": [], "snap.push_history": []}
    one = {"backup_server": {"minion_id": "backup1", "host": "b"}}
    assert mine("backup1", one) == backup and mine("web1", one) == server
    several = {**one, "backup_servers": BACKUPS}
    # backup2 is a backup server by the list alone; the fixed backup_server
    # entry of the pillar tree does not make backup1 anyone else's.
    assert mine("backup2", several) == backup and mine("backup1", several) == backup
    assert mine("web1", several) == server
    # No backup server named at all: a server.
    assert mine("web1", {}) == server
