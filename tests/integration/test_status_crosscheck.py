"""Status a hostile backup server cannot fake (issue 12): salt-run snap.status
checks the backup server's receipts and archive record against each server's
own push records and against the off-site listing, read by the drill minion
(web1 here) with a read-only identity on moto. The test plays the compromised
backup server (as root on backup1): forged receipts of a push that never
happened, an archive record off-site does not hold, history wiped while every
receipt still says OK. Each is SUSPECT, with an event and an alert."""

import contextlib
import json
import pathlib
import re
import shutil
import subprocess
import sys
import time

import pytest
import yaml

from tests.support.fleet import state_failures
from tests.support.gpg import GnuPG
from tests.support.moto import Moto

PY = sys.executable
PREFIX = "snap/backup1"
TRIED = []  # (what the backup server did, what status said) for the closing table


def push(fleet, minion_id):
    config = fleet.root_of(minion_id) / "etc" / "snap" / "client.json"
    subprocess.run([PY, "-m", "snap_core", "push", "--quiet", "--no-splay", "--config", str(config)], check=True)


@pytest.fixture(scope="module")
def site(deployed):
    """web1 and db1 pushed; three rotations (four snapshots each); one archive
    on moto; web1 lists off-site with a read-only identity."""
    fleet, _ = deployed
    with Moto(prefix=PREFIX) as moto, GnuPG() as offline:
        pillar = {
            "snap": {
                "archive": {"recipients": [offline.gpg("--armor", "--export", offline.fingerprint).stdout.decode()],
                            "target": moto.target(), "retain_days": 95, "pack": {"compressor": "lz4"},
                            "chain": {"enabled": False}},
                "verify": {"minion": "web1", "target": moto.add_read_only_identity(), "prefix": PREFIX + "/"},
            }
        }  # fmt: skip
        fleet.set_pillar(yaml.safe_dump(pillar))
        try:
            assert state_failures({"backup1": fleet.highstate(tgt="backup1")}) == []
            for minion_id in fleet.clients:
                push(fleet, minion_id)
            for _ in range(3):
                fleet.salt("snap.rotate", "recent", tgt="backup1")
            assert fleet.run("snap.archive")["result"] is True
            fleet.salt("mine.update")
            root = fleet.root_of("backup1")
            server = json.loads((root / "etc" / "snap" / "server.json").read_text())
            yield {"fleet": fleet, "root": root, "history": pathlib.Path(server["history_dir"]), "start": time.time()}
        finally:
            fleet.set_pillar("")


def status(fleet, *args):
    ret = fleet.master.salt_run_cli(timeout=180).run("snap.status", *args)
    assert isinstance(ret.data, dict), ret.stderr or ret.stdout
    return ret.returncode, ret.data


def rows(table):
    return {r["server"]: r for r in table["servers"]}


@contextlib.contextmanager
def kept(path: pathlib.Path):
    """Put ``path`` back as it was afterwards."""
    saved = path.read_bytes()
    try:
        yield path
    finally:
        path.write_bytes(saved)


def wipe(directory: pathlib.Path):
    """Remove everything in ``directory``, not the directory itself."""
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def test_three_honest_sources_agree(site):
    code, table = status(site["fleet"])
    assert {r["state"] for r in table["servers"]} == {"OK"}, table["servers"]
    assert table["archive"]["archive_state"] == "OK", table["archive"]
    check = table["crosscheck"]
    assert check["findings"] == 0 and check["offsite"].startswith("read by web1: 1 archives"), check
    assert set(check["compared"]) == {
        "server/backup server",
        "server/off-site",
        "off-site history",
        "backup server/off-site",
    }
    assert code == 0
    TRIED.append(("nothing (honest)", "OK, OK, archive OK"))


def test_forged_receipts_of_a_push_web1_never_made(site, event_listener):
    fleet, start = site["fleet"], time.time()
    receipts = next(p for p in (site["root"] / "srv" / "snap").rglob("receipts.jsonl") if "web1" in str(p))
    with kept(receipts):
        t = time.time() + 5
        forged = [
            {"started": t, "finished": t + 1, "dest": ".", "exit": 0, "state": "running", "run_id": "forged-run"},
            {"started": t + 1, "finished": t + 9, "dest": "data", "exit": 0, "files": 9, "bytes": 999, "run_id": "forged-run"},
            {"started": t + 9, "finished": t + 10, "dest": ".", "exit": 0, "state": "done", "run_id": "forged-run"},
        ]  # fmt: skip
        with receipts.open("a") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in forged)
        later = t + 1800  # the forged push is past the clock-skew allowance
        # The backup server's own word: the forged push is web1's last good one.
        lying = fleet.salt("snap.backup_view", tgt="backup1")["servers"]["web1"]
        code, table = status(fleet, f"now={later}")
    web1 = rows(table)["web1"]
    assert web1["state"] == "SUSPECT" and "forged-run" in web1["note"] and "never made" in web1["note"], web1
    assert rows(table)["db1"]["state"] != "SUSPECT", rows(table)["db1"]
    assert code != 0
    matched = event_listener.wait_for_events([(fleet.master.id, "snap/status/suspect")], after_time=start, timeout=30)
    assert matched.found_all_events, "no snap/status/suspect event on the master's bus"
    events = [e.data for e in matched.matches]
    assert any(e["subject"] == "web1" and "server" in e["sources"] for e in events), events
    deadline = time.monotonic() + 60
    while not [p for p in fleet.alerts.glob("snap_status_suspect-*.json") if p.stat().st_mtime >= start]:
        assert time.monotonic() < deadline, f"no alert filed: {sorted(p.name for p in fleet.alerts.iterdir())}"
        time.sleep(1)
    TRIED.append(("receipts of a push web1 never made", f"web1 {web1['state']}, event, alert"))
    assert lying["last_good"]["bytes"] == 999, lying  # the backup server alone would have vouched for it


def test_an_archive_record_off_site_does_not_hold(site):
    fleet = site["fleet"]
    record = next((site["root"] / "var" / "lib" / "snap").rglob("archive-last.json"))
    with kept(record):
        rec = json.loads(record.read_text())
        rec["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        rec["manifest"]["archive"]["key"] = PREFIX + "/20991231T000000Z-forged.sqfs.gpg"
        record.write_text(json.dumps(rec))
        code, table = status(fleet)
    arc = table["archive"]
    assert arc["archive_state"] == "SUSPECT" and "off-site holds no such archive" in arc["error"], arc
    assert code != 0
    TRIED.append(("an archive record with a key off-site does not hold", f"archive {arc['archive_state']}"))


def test_a_real_push_replayed_at_a_fresh_time(site):
    """web1's real last run id with a time of the backup server's choosing
    would make a server that stopped pushing look current."""
    fleet = site["fleet"]
    last = fleet.salt("snap.push_history", tgt="web1")[-1]
    receipts = next(p for p in (site["root"] / "srv" / "snap").rglob("receipts.jsonl") if "web1" in str(p))
    with kept(receipts):
        t = time.time() + 1200  # past the clock-skew allowance after the real push
        replayed = [
            {"started": t, "finished": t + 1, "dest": ".", "exit": 0, "state": "running", "run_id": last["run_id"]},
            {"started": t + 1, "finished": t + 9, "dest": "data", "exit": 0, "files": 9, "bytes": 9, "run_id": last["run_id"]},
            {"started": t + 9, "finished": t + 10, "dest": ".", "exit": 0, "state": "done", "run_id": last["run_id"]},
        ]  # fmt: skip
        with receipts.open("a") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in replayed)
        code, table = status(fleet, f"now={t + 60}")
    web1 = rows(table)["web1"]
    assert web1["state"] == "SUSPECT" and "own record has that push" in web1["note"], web1
    assert code != 0
    TRIED.append(("web1's real last push replayed at a fresh time", f"web1 {web1['state']}"))


def test_an_old_archive_record_replayed_as_new(site):
    """The backup server stopped archiving and keeps answering with its last
    real archive, finished just now by its word."""
    fleet = site["fleet"]
    record = next((site["root"] / "var" / "lib" / "snap").rglob("archive-last.json"))
    with kept(record):
        rec = json.loads(record.read_text())
        later = time.time() + 3 * 86400
        rec["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(later))
        record.write_text(json.dumps(rec))
        code, table = status(fleet, f"now={later + 60}")
    arc = table["archive"]
    assert arc["archive_state"] == "SUSPECT" and "off-site it landed" in arc["error"], arc
    assert code != 0
    TRIED.append(("the last real archive record replayed 3 days later", f"archive {arc['archive_state']}"))


def test_history_wiped_while_receipts_say_ok(site, capsys):
    fleet, history = site["fleet"], site["history"]
    saved = history.parent / (history.name + ".kept")
    subprocess.run(["cp", "-a", str(history), str(saved)], check=True)
    try:
        wipe(history)  # its contents: history may be a mount point of its own
        push(fleet, "web1")  # the fleet carries on; the backup server keeps answering OK
        fleet.salt("snap.rotate", "recent", tgt="backup1")
        assert fleet.run("snap.archive")["result"] is True
        _, lying = status(fleet, "offsite=False")
        code, table = status(fleet)
    finally:
        wipe(history)
        subprocess.run(["cp", "-a", f"{saved}/.", str(history)], check=True)
        shutil.rmtree(saved)
    assert {r["state"] for r in lying["servers"]} == {"OK"}, "the backup server's own word says OK"
    got = rows(table)
    for minion_id in ("web1", "db1"):
        assert got[minion_id]["state"] == "SUSPECT", got[minion_id]
    assert re.search(r"shrank from \d+ snapshots", got["web1"]["note"]), got["web1"]
    assert code != 0
    TRIED.append(("history wiped, receipts still OK, next archive made", "web1 SUSPECT, db1 SUSPECT"))
    with capsys.disabled():
        print("\nplayed the compromised backup server:")
        for what, said in TRIED:
            print(f"  {what:<55} -> status: {said}")
