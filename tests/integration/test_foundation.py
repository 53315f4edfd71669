"""Issue 2 on a real master and minions: schedule from the ext_pillar, per-server
keys through the mine, re-validated by whoever reads them."""

import json
import zlib

from tests.support.fleet import state_changes, state_failures
from tests.support.helpers import run


def test_every_minion_gets_its_minute_from_the_ext_pillar(fleet):
    data = fleet.salt("pillar.items")
    for minion_id in ("web1", "db1", "backup1"):
        sched = data[minion_id]["snap"]["schedule"]
        assert sched["minute"] == zlib.crc32(minion_id.encode()) % 60
        assert sched["hours"] == [2, 10, 18]
    assert data["web1"]["snap"]["schedule"]["minute"] != data["db1"]["snap"]["schedule"]["minute"]


def test_first_highstate_succeeds_and_makes_keys_for_servers_only(deployed):
    fleet, runs = deployed
    assert state_failures(runs["first"]) == []
    assert state_failures(runs["accounts"]) == []
    for minion_id in fleet.clients:
        key = fleet.root_of(minion_id) / "etc" / "snap" / "id_ed25519"
        assert key.exists() and (key.parent / "id_ed25519.pub").exists()
        changed = [c for c in state_changes({minion_id: runs["first"][minion_id]}) if "snap-keypair" in c[1]]
        assert changed, f"{minion_id}: keypair state reported no change on first run"
    # Both servers' accounts were made in one pass of the account tables
    # (newusers), and their own states then completed them (they log in later).
    made = [r for tag, r in runs["accounts"]["backup1"].items() if "snap-accounts-made" in tag]
    assert len(made) == 1, "the one-pass account state ran on the backup server"
    assert set(made[0]["changes"]["users"]["new"].values()) == set(fleet.clients), made[0]
    # The backup server gets no push key of its own.
    assert not (fleet.root_of("backup1") / "etc" / "snap" / "id_ed25519").exists()


def test_second_highstate_changes_nothing_and_test_mode_agrees(deployed):
    fleet, _ = deployed
    second = fleet.highstate()
    assert state_failures(second) == []
    assert state_changes(second) == []
    dry = fleet.highstate(test=True)
    assert state_failures(dry) == []
    assert state_changes(dry) == []
    assert all(r["result"] is True for states in dry.values() for r in states.values())


def test_mine_get_from_one_minion_returns_the_others_validated_key(deployed):
    fleet, _ = deployed
    got = fleet.salt("mine.get", "db1", "snap.pubkey", tgt="web1")["db1"]
    pub = fleet.root_of("db1") / "etc" / "snap" / "id_ed25519.pub"
    printed = run("ssh-keygen", "-lf", str(pub)).stdout.split()
    assert got["fingerprint"] == printed[1]
    assert got["line"] == " ".join(pub.read_text().split()[:2])
    assert got["account"] == "snap-db1" and got["id"] == "db1"


def test_backup_server_revalidates_mine_keys_and_rejects_forged_ones(deployed):
    fleet, _ = deployed
    clean = fleet.salt("snap.fleet_keys", tgt="backup1")
    assert set(clean["accepted"]) == {"web1", "db1"} and clean["rejected"] == {}

    # db1 is compromised: it publishes a key with a forced command (options
    # would be copied into authorized_keys by a naive reader).
    web1_line = clean["accepted"]["web1"]["line"]
    forged = {"id": "db1", "line": f'command="/bin/sh",no-pty {web1_line}'}
    # test.outputter(data) returns its argument, so the mine holds exactly `forged`
    # (mine.send passes a dict argument as keyword arguments).
    sent = fleet.salt(
        "mine.send", "snap.pubkey", json.dumps({"data": forged}), mine_function="test.outputter", tgt="db1"
    )
    assert sent is True
    try:
        seen = fleet.salt("mine.get", "db1", "snap.pubkey", tgt="backup1")["db1"]
        assert seen == forged, f"forged data did not reach the mine as sent: {seen}"
        checked = fleet.salt("snap.fleet_keys", tgt="backup1")
        assert "db1" not in checked["accepted"]
        assert "options are not allowed" in checked["rejected"]["db1"]
        assert set(checked["accepted"]) == {"web1"}
    finally:
        fleet.salt("mine.update", tgt="db1")
    assert "db1" in fleet.salt("snap.fleet_keys", tgt="backup1")["accepted"]


def test_runner_reports_schedule_and_fingerprint_through_the_master(deployed):
    fleet, _ = deployed
    report = fleet.run("snap.fleet")
    assert set(report) == set(fleet.clients)
    for minion_id in fleet.clients:
        row = report[minion_id]
        assert row["minute"] == zlib.crc32(minion_id.encode()) % 60
        assert row["key"] == "ok" and row["fingerprint"].startswith("SHA256:")
        assert row["account"] == f"snap-{minion_id}"
        assert row["backup_server"] == "backup1" and row["account_published"] == f"snap-{minion_id}", row
