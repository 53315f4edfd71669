"""salt-run snap.status / archive / restore over several backup servers (issue 14).

The runner is loaded as a plain module with Salt's plumbing faked, as in
test_status_hostile.py (what the minions answer, the mine, the accepted keys,
the pillar the master compiles); tests/integration/test_two_backup_servers.py
runs the same views against a real fleet with two backup servers.

The fleet: backup1 and backup2; db1 is assigned to backup1, web1 to backup2
(it moved: backup1's history still holds its pushes from before).
"""

import copy
import datetime

import pytest
import salt.client
import salt.exceptions
import salt.wheel

from tests.support.loader_modules import load

NOW = 1_800_000_000.0
SCHEDULE = {"minute": 5, "second": 0, "hours": [2, 10, 18]}
BACKUPS = {"backup1": {"host": "10.0.0.1", "port": 22}, "backup2": {"host": "10.0.0.2", "port": 22}}
ASSIGNMENT = {"db1": "backup1", "drill1": "backup1", "web1": "backup2"}


def iso(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def own(last, *servers):
    """A server's own push records, the newest last, to these backup servers
    (host:port), as its snap.push_history returns them: written as the push
    writes push.jsonl, read back by the real reader."""
    import json
    import tempfile

    from snap_core import crosscheck

    with tempfile.TemporaryDirectory() as state:
        with open(f"{state}/push.jsonl", "w") as handle:
            for i, to in enumerate(servers):
                at = last - (len(servers) - 1 - i) * 3600
                handle.write(json.dumps({"run_id": f"r{i}", "minion_id": "x", "account": "snap-x", "server": to,
                                         "started": iso(at), "finished": iso(at + 60), "seconds": 60.0,
                                         "result": "ok", "error": None, "attempts": 1}) + "\n")  # fmt: skip
        return crosscheck.read_push_history(state)


LAST = NOW - 2 * 3600  # 02:05 slot passed, pushed then
# web1 pushed to backup1 before it moved to backup2; db1 only ever to backup1.
OWN = {"web1": own(LAST, "10.0.0.1:22", "10.0.0.2:22"), "db1": own(LAST, "10.0.0.1:22")}


def view(servers, held=None):
    return {
        "servers": {m: {"last_good": {"run_id": OWN[m][-1]["run_id"], "started": LAST + 30}, "last_failed": None,
                        "running_since": None} for m in servers},
        "archive": None,
        "held": held or {},
    }  # fmt: skip


VIEWS = {
    "backup1": view(["db1"], held={"web1": {"run_id": "r0", "synced": "2027-01-14T10:07:00Z", "seq": 3}}),
    "backup2": view(["web1"]),
}


def pillar_of(minion):
    snap = {"backup_servers": BACKUPS, "assignment": ASSIGNMENT,
            "verify": {"minion": "drill1", "target": {"bucket": "b"}}}  # fmt: skip
    snap["backup_server"] = {"minion_id": minion if minion in BACKUPS else ASSIGNMENT.get(minion)}
    return {"snap": snap}


@pytest.fixture
def runner(monkeypatch, tmp_path):
    """The runner with a fleet of two backup servers; ``runner.calls`` lists
    what was asked of whom, ``runner.views`` what each backup server answers."""
    mod = load("runners")
    mod.calls = []
    mod.views = copy.deepcopy(VIEWS)
    mod.mine = mine = {
        "snap.hostkey": {"backup1": "ssh-ed25519 AAAA1", "backup2": "ssh-ed25519 AAAA2"},
        "snap.pubkey": {m: {"schedule": SCHEDULE} for m in OWN},
        "snap.push_history": {},
    }

    class Client:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def cmd(self, tgt, fun, *args, **kwargs):
            mod.calls.append((tgt, fun, kwargs.get("kwarg")))
            if fun == "snap.backup_view":
                return {tgt: copy.deepcopy(mod.views[tgt])} if tgt in mod.views else {}
            if fun == "snap.push_history":
                return {m: OWN.get(m, []) for m in ([tgt] if isinstance(tgt, str) else tgt)}
            if fun == "snap.offsite_inventory":
                return {tgt: []}
            if fun == "snap.archive":
                return {b: {"retcode": 0, "ret": {"manifest_key": f"snap/{b}/m.json", "manifest": {"b": b}}}
                        for b in tgt if b != "backup2" or "backup2" in mod.views}  # fmt: skip
            raise AssertionError(fun)

    class Wheel:
        def __init__(self, opts):
            pass

        def cmd(self, fun, arg, print_event=False):
            return {"minions": ["backup1", "backup2", "db1", "drill1", "web1"]}

    monkeypatch.setattr(salt.client, "get_local_client", lambda conf: Client())
    monkeypatch.setattr(salt.wheel, "WheelClient", Wheel)
    mod.__opts__ = {"conf_file": "/dev/null", "cachedir": str(tmp_path / "cache")}
    mod.__salt__ = {
        "mine.get": lambda tgt, fun, **kw: mine[fun],
        "pillar.show_pillar": lambda minion=None: pillar_of(minion),
        "event.send": lambda tag, data: True,
    }
    return mod


def test_one_table_over_both_backup_servers_each_judging_its_own(runner):
    table = runner.status(now=NOW)
    rows = {r["server"]: r for r in table["servers"]}
    assert sorted(rows) == ["db1", "drill1", "web1"], rows
    assert rows["db1"]["backup_server"] == "backup1" and rows["db1"]["state"] == "OK", rows["db1"]
    assert rows["web1"]["backup_server"] == "backup2" and rows["web1"]["state"] == "OK", rows["web1"]
    # Where web1's history from before the move lives.
    assert rows["web1"]["older_history"] == "backup1 (newest 2027-01-14T10:07:00Z)", rows["web1"]
    assert rows["db1"]["older_history"] == ""
    assert table["backup_servers"] == ["backup1", "backup2"]
    assert [a["backup_server"] for a in table["archives"]] == ["backup1", "backup2"]
    # Each backup server's archive is checked against its own prefix.
    asked = [(tgt, kw) for tgt, fun, kw in runner.calls if fun == "snap.offsite_inventory"]
    assert asked == [("drill1", {"prefix": "snap/backup1/"}), ("drill1", {"prefix": "snap/backup2/"})], asked
    # drill1 has no schedule (never highstated as a client): NEVER, so not OK.
    assert rows["drill1"]["state"] == "NEVER" and table["retcode"] == 1


def test_a_backup_server_that_does_not_answer_fails_the_view(runner):
    del runner.views["backup2"]
    table = runner.status(now=NOW)
    archives = {a["backup_server"]: a for a in table["archives"]}
    assert archives["backup2"]["archive_state"] == "NO ANSWER", archives
    assert "backup2 did not answer" in archives["backup2"]["error"]
    assert table["ok"] is False and table["retcode"] == 1
    # web1 is backup2's: no other backup server vouches for it.
    assert "web1" not in {r["server"] for r in table["servers"] if r["backup_server"] == "backup1"}


def test_one_backup_server_alone_keeps_the_single_table(runner):
    table = runner.status(now=NOW, tgt="backup1")
    assert "archive" in table and "archives" not in table
    assert [r["server"] for r in table["servers"]] == ["db1", "drill1"]
    assert table["history_only"] == {"web1": "2027-01-14T10:07:00Z"}


def test_archive_runs_on_every_backup_server_and_fails_if_one_does(runner):
    out = runner.archive()
    assert out["result"] is True and out["retcode"] == 0, out
    assert sorted(out["backup_servers"]) == ["backup1", "backup2"]
    assert out["backup_servers"]["backup2"]["manifest_key"] == "snap/backup2/m.json"
    del runner.views["backup2"]
    out = runner.archive()
    assert out["failed"] == ["backup2"] and out["retcode"] == 1, out
    assert "backup2 did not answer" in out["backup_servers"]["backup2"]["error"]


def test_restore_takes_the_backup_server_the_server_is_assigned_to(runner):
    assert runner._backup_server_of("web1") == "backup2"
    assert runner._backup_server_of("db1") == "backup1"
    # History from before the move: asked for by name.
    assert runner._backup_server_of("web1", "backup1") == "backup1"
    with pytest.raises(salt.exceptions.SaltInvocationError, match="'web1' is not a backup server"):
        runner._backup_server_of("db1", "web1")


# -- the cold attack on the first version (/work/wt/attack14.md) ------------------------------------


def test_a_backup_server_that_deletes_its_mine_entry_still_counts_and_fails_the_view(runner):
    """H1: backup2 drops its snap.hostkey from the mine and stops answering:
    it is still a backup server (pillar's word), and web1 is not quietly lost."""
    del runner.mine["snap.hostkey"]["backup2"]
    del runner.views["backup2"]
    table = runner.status(now=NOW)
    assert table["backup_servers"] == ["backup1", "backup2"], table
    rows = {r["server"]: r for r in table["servers"]}
    assert rows["web1"]["state"] == "NOT JUDGED" and table["ok"] is False and table["retcode"] == 1, rows


def test_a_malformed_answer_from_one_backup_server_leaves_the_others_judged(runner):
    """M1: a list for an archive record once raised out of the whole view."""
    runner.views["backup2"]["archive"] = ["x"]
    runner.views["backup2"]["servers"]["web1"] = {"last_good": {"started": 1e308}}
    table = runner.status(now=NOW)
    rows = {r["server"]: r for r in table["servers"]}
    assert rows["db1"]["state"] == "OK" and rows["db1"]["backup_server"] == "backup1", rows
    archives = {a["backup_server"]: a for a in table["archives"]}
    assert archives["backup2"]["archive_state"] == "NO ANSWER" and "could not be judged" in archives["backup2"]["error"]
    assert rows["web1"]["state"] == "NOT JUDGED" and table["ok"] is False


def test_a_claim_to_hold_another_servers_history_is_its_word_only_and_restore_refuses_it(runner):
    """M2: backup2 says it holds db1's history; db1 never pushed there."""
    runner.views["backup2"]["held"] = {"db1": {"synced": "2027-01-01T00:00:00Z"}, "bad id!\x1b[2J": {"synced": "x"}}
    table = runner.status(now=NOW)
    rows = {r["server"]: r for r in table["servers"]}
    assert rows["db1"]["older_history"] == "backup2 (newest 2027-01-01T00:00:00Z, its word only)", rows["db1"]
    assert not any("bad id" in r["server"] for r in table["servers"]), "an invalid id is no row"
    with pytest.raises(
        salt.exceptions.SaltInvocationError,
        match="db1 was never assigned to backup2 .* its own push records do not name backup2",
    ):
        runner._backup_server_of("db1", "backup2")
    assert runner._backup_server_of("db1", "backup2", unconfirmed=True) == "backup2"


def test_one_backup_server_alone_lists_only_its_own_prefix(runner):
    """M3: tgt=backup2 once listed snap/ (every backup server's archives)."""
    runner.status(now=NOW, tgt="backup2")
    asked = [kw for tgt, fun, kw in runner.calls if fun == "snap.offsite_inventory"]
    assert asked == [{"prefix": "snap/backup2/"}], asked


def test_rows_a_backup_server_adds_for_servers_not_its_own_are_dropped(runner):
    """L2: backup2 answers for db1 (backup1's) too: only backup1 judges db1."""
    runner.views["backup2"]["servers"]["db1"] = {"last_good": None, "last_failed": None, "running_since": None}
    table = runner.status(now=NOW)
    assert [(r["server"], r["backup_server"]) for r in table["servers"] if r["server"] == "db1"] == [("db1", "backup1")]
    assert {r["server"]: r["state"] for r in table["servers"]}["db1"] == "OK"


def test_the_masters_own_record_of_assignments_confirms_older_history(runner, tmp_path):
    """attack14b M1: a server's own records keep about a week of pushes; the
    master's record (written by the ext_pillar) keeps every backup server it
    was ever assigned to."""
    from snap_core import fleet

    runner.views["backup2"]["held"] = {"db1": {"synced": "2027-01-01T00:00:00Z"}}
    rows = {r["server"]: r for r in runner.status(now=NOW)["servers"]}
    assert rows["db1"]["older_history"].endswith("its word only)")
    cache = tmp_path / "cache"
    assert fleet.remember_assignment(cache, "db1", "backup2") is True
    assert fleet.remember_assignment(cache, "db1", "backup2") is False  # written once
    assert fleet.assigned_ever(cache, "db1") == ["backup2"]
    rows = {r["server"]: r for r in runner.status(now=NOW)["servers"]}
    assert rows["db1"]["older_history"] == "backup2 (newest 2027-01-01T00:00:00Z)", rows["db1"]
    assert runner._backup_server_of("db1", "backup2") == "backup2"
    with pytest.raises(ValueError):
        fleet.remember_assignment(cache, "../etc", "backup2")


def test_two_backup_servers_under_one_prefix_fail_the_view(runner, monkeypatch):
    """attack14b L7: a snap:archive:prefix kept from one backup server."""
    shared = {m: pillar_of(m) for m in ("backup1", "backup2")}
    for p in shared.values():
        p["snap"]["archive"] = {"prefix": "snap/fleet"}
    monkeypatch.setitem(
        runner.__salt__, "pillar.show_pillar", lambda minion=None: shared.get(minion) or pillar_of(minion)
    )
    table = runner.status(now=NOW)
    assert table["ok"] is False and "archive under one prefix snap/fleet/" in table["note"], table.get("note")
