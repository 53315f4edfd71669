"""The three-source cross-check of snap.status, as plain data (the core's
comparison is tested in rust/snap-core/src/crosscheck.rs): reading a
server's own push records, and marking the table."""

import json

from snap_core import crosscheck, fleetstatus

SCHED = {"minute": 17, "second": 0, "hours": [2, 10, 18]}
NOW = 1_800_000_000.0


def record(run, started, result="ok"):
    return {"run_id": run, "minion_id": "web1", "account": "snap-web1", "server": "127.0.0.1",
            "started": started, "finished": started, "seconds": 1.0, "result": result, "error": None,
            "error_kind": None, "attempts": 1, "hooks": [], "transfer": None, "warnings": []}  # fmt: skip


def test_push_history_reads_the_tail_and_skips_garbage(tmp_path):
    assert crosscheck.read_push_history(tmp_path) == []
    lines = [json.dumps(record(f"r{i}", f"2026-11-{i + 1:02d}T02:17:00Z")) for i in range(25)]
    lines.insert(3, "{not json")
    (tmp_path / "push.jsonl").write_text("\n".join(lines) + "\n")
    got = crosscheck.read_push_history(tmp_path, limit=21)
    assert [r["run_id"] for r in got] == [f"r{i}" for i in range(4, 25)]
    assert set(got[0]) == {"run_id", "started", "finished", "result", "error", "server"}
    assert got[0]["server"] == "127.0.0.1"
    # A long history: only its tail is read, the cut first line skipped.
    (tmp_path / "push.jsonl").write_text("\n".join([json.dumps(record("old", "2026-01-01T00:00:00Z"))] * 3000) + "\n")
    assert len(crosscheck.read_push_history(tmp_path, limit=0)) < 3000


def test_a_forged_receipt_marks_the_server_suspect_and_names_it():
    view = {"web1": {"last_good": {"run_id": "forged", "started": NOW - 3600, "finished": NOW - 3500}}}
    own = {"web1": [record("r1", "2027-01-15T02:17:00Z")]}
    table = fleetstatus.build(["web1"], {"web1": SCHED}, view, {"web1": own["web1"][-1]}, None, now=NOW)
    result = crosscheck.check(["web1"], view, own, None, None, NOW)
    events = crosscheck.mark(table, result, "not read: test")
    row = table["servers"][0]
    assert row["state"] == "SUSPECT" and "forged" in row["note"], row
    assert table["ok"] is False and table["crosscheck"]["offsite"] == "not read: test"
    assert events == [
        {"subject": "web1", "sources": ["backup server", "server"], "findings": [result["findings"][0]["message"]]}
    ]


def test_an_archive_record_off_site_does_not_hold_marks_the_archive():
    archive = {"result": "ok", "finished": "2027-01-15T03:00:00Z",
               "manifest": {"archive": {"key": "snap/b/forged.sqfs.gpg", "retain_until": "2027-05-01T00:00:00Z"}}}  # fmt: skip
    table = fleetstatus.build([], {}, {}, {}, archive, now=NOW, archive_expected=True)
    offsite = [{"key": "snap/b/real.sqfs.gpg", "landed": NOW - 86400, "created": None, "servers": {}, "error": None}]
    events = crosscheck.mark(table, crosscheck.check([], {}, {}, archive, offsite, NOW))
    assert table["archive"]["archive_state"] == "SUSPECT" and "no such archive" in table["archive"]["error"]
    assert events[0]["subject"] == "archive"


def test_a_chain_link_record_is_matched_by_its_manifest_key():
    """A chain run records its link's manifest key; the listing shows the link
    under that key: they agree, and a record naming another link does not."""
    link = "snap/b/chain/2027-01-15T030000Z.link-0002.chain.json"
    finished = "2027-01-15T03:00:00Z"
    archive = {"result": "ok", "finished": finished, "manifest": None, "manifest_key": link,
               "chain": {"chain": {"id": "c1", "link": 2}}}  # fmt: skip
    landed = crosscheck._unix(finished) - 30
    offsite = [{"key": link, "landed": landed, "created": landed - 60, "servers": {}, "error": None}]
    assert crosscheck.check([], {}, {}, archive, offsite, NOW)["findings"] == []
    other = dict(archive, manifest_key=link.replace("0002", "0003"))
    found = crosscheck.check([], {}, {}, other, offsite, NOW)["findings"]
    assert found and "no such archive" in found[0]["message"], found
