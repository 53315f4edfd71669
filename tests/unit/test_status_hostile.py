"""salt-run snap.status against a compromised backup server's answers (issue 12).

The runner is loaded as a plain module and Salt's plumbing around it is
faked: what the minions answer (LocalClient), the mine, the accepted keys and
the pillar the master compiles. That is the one place a mock stands in for
real Salt here: a real compromised backup server would send these answers by
replacing the snap module its minion runs, which a test fleet cannot do
without becoming something else. tests/integration/test_status_crosscheck.py
plays the same backup server through the files it really controls.

The fleet: web1 stopped pushing three days ago, db1 pushed on time, and the
newest archive landed 60 days ago. Honest answers give web1 MISSING and the
archive LATE; no forged answer may turn either into OK.
"""

import copy
import datetime
import gc

import pytest
import salt.client
import salt.exceptions
import salt.wheel

from snap_core import run_status
from tests.support.loader_modules import load

NOW = 1_800_000_000.0
DAY = 86400.0
SCHEDULE = {"minute": 5, "second": 0, "hours": [2, 10, 18]}
KEY = "snap/backup1/2026/20261116T000000Z-0123456789abcdef.sqfs.gpg"


def iso(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def own(last):
    return [
        {"run_id": f"r{i}", "started": iso(last - i * DAY / 3), "finished": iso(last - i * DAY / 3 + 60),
         "result": "ok", "error": None}
        for i in range(6, -1, -1)
    ]  # fmt: skip


OWN = {"web1": own(NOW - 3 * DAY - 3 * 3600), "db1": own(NOW - 2.9 * 3600 + 5 * 60)}
OFFSITE = [{"key": KEY, "landed": NOW - 60 * DAY, "created": NOW - 60 * DAY - 300,
            "servers": {"web1": 5, "db1": 5}, "error": None}]  # fmt: skip


def honest_view():
    servers = {}
    for minion, records in OWN.items():
        last = records[-1]
        started = datetime.datetime.fromisoformat(last["started"].replace("Z", "+00:00")).timestamp()
        servers[minion] = {"last_good": {"run_id": last["run_id"], "started": started + 30},
                           "last_failed": None, "running_since": None}  # fmt: skip
    archive = {"result": "ok", "finished": iso(NOW - 60 * DAY + 600),
               "manifest": {"archive": {"key": KEY, "retain_until": iso(NOW + 31 * DAY)}}}  # fmt: skip
    return {"servers": servers, "archive": archive}


@pytest.fixture
def status(monkeypatch):
    """status(view) -> the runner's table, with ``view`` as backup1's answer."""

    def run(view, hostkeys=None, offsite=None, busy=0, mine_busy=0):
        """``busy``: how many publishes the master refuses first, as a
        loaded master does (SaltClientError), before it takes them;
        ``mine_busy``: how many mine reads time out first."""
        runner = load("runners")
        refusals = [busy]
        mine_refusals = [mine_busy]

        def mine_get(tgt, fun, **kw):
            run.collector.append(gc.isenabled())
            if mine_refusals[0]:
                mine_refusals[0] -= 1
                raise salt.exceptions.SaltReqTimeoutError("Message timed out")
            return mine[fun]

        mine = {
            "snap.hostkey": hostkeys or {"backup1": "ssh-ed25519 AAAA"},
            "snap.pubkey": {m: {"schedule": SCHEDULE} for m in OWN},
            "snap.push_history": {},
        }
        pillar = {
            "snap": {
                "verify": {"minion": "drill1", "target": {"bucket": "b"}},
                "archive": {"target": {"bucket": "b"}},
                "backup_server": {"minion_id": "backup1"},
            }  # fmt: skip
        }

        class Client:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def cmd(self, tgt, fun, *args, **kwargs):
                if refusals[0]:
                    refusals[0] -= 1
                    raise salt.exceptions.SaltClientError("The salt master could not be contacted. Is master running?")
                answers = {
                    "snap.backup_view": lambda: {"backup1": view},
                    "snap.push_history": lambda: {m: OWN[m] for m in tgt},
                    "snap.offsite_inventory": lambda: {"drill1": copy.deepcopy(offsite or OFFSITE)},
                }
                return answers[fun]()

        class Wheel:
            def __init__(self, opts):
                pass

            def cmd(self, fun, arg, print_event=False):
                return {"minions": ["backup1", *OWN]}

        monkeypatch.setattr(salt.client, "get_local_client", lambda conf: Client())
        monkeypatch.setattr(salt.wheel, "WheelClient", Wheel)
        runner.__opts__ = {"conf_file": "/dev/null"}
        runner.__salt__ = {
            "mine.get": mine_get,
            "pillar.show_pillar": lambda minion=None: copy.deepcopy(pillar),
            "event.send": lambda tag, data: True,
        }
        monkeypatch.setattr(run_status, "PUBLISH_PAUSE", 0.0)
        table = runner.status(now=NOW, offsite="drill1")
        return {r["server"]: r for r in table.get("servers", [])}, table

    run.collector = []
    return run


def test_honest_answers_show_web1_missing_and_the_archive_late(status):
    rows, table = status(honest_view())
    assert rows["web1"]["state"] == "MISSING" and rows["db1"]["state"] == "OK", rows
    assert table["archive"]["archive_state"] == "LATE", table["archive"]
    assert table["retcode"] != 0


def test_a_busy_master_is_asked_again_and_then_named(status):
    """A loaded master times out a publish now and then (CI saw
    ``salt-run snap.status --out=json`` print a traceback as a string).
    Status asks again, twice; a master that never takes the publish gives a
    clear error with return code 2, never a traceback."""
    rows, table = status(honest_view(), busy=run_status.PUBLISH_TRIES - 1, mine_busy=1)
    assert rows["web1"]["state"] == "MISSING" and rows["db1"]["state"] == "OK", rows
    rows, table = status(honest_view(), mine_busy=run_status.PUBLISH_TRIES)
    assert table["retcode"] == 2 and "reading the mine: no answer from the master (3 tries)" in table["error"], table
    rows, table = status(honest_view(), busy=run_status.PUBLISH_TRIES)
    assert rows == {} and table["retcode"] == 2, table
    assert "publishing snap.backup_view to backup1: no answer from the master (3 tries)" in table["error"], table


def test_no_garbage_collection_midway_through_status(status):
    """Python 3.11 breaks an import when the collector runs a __del__ that
    imports in the middle of it (CPython gh-91351): CI saw compiling pillar
    fail so. Status runs without the collector and collects at the end."""

    class Cycle:
        freed = []

        def __del__(self):
            Cycle.freed.append(True)

    assert gc.isenabled()
    status(honest_view())
    assert status.collector and not any(status.collector), status.collector
    assert gc.isenabled(), "the collector must be on again after status"
    with run_status.no_collection_midway():
        a, b = Cycle(), Cycle()
        a.other, b.other = b, a
        del a, b
        assert not gc.isenabled() and Cycle.freed == []
    assert Cycle.freed == [True, True], "the cycle is collected once the block ends"


def test_a_client_publishing_a_host_key_is_not_taken_for_the_backup_server(status):
    """Any compromised client can ``mine.send snap.hostkey``; the runner
    keeps only the publisher its own pillar names as the backup server."""
    rows, table = status(honest_view(), hostkeys={"backup1": "ssh-ed25519 AAAA", "web1": "ssh-ed25519 FORGED"})
    assert rows["db1"]["state"] == "OK" and table["archive"]["archive_state"] == "LATE", (rows, table["archive"])


def test_an_archive_written_again_off_site_is_suspect(status):
    """On a server that ignores If-None-Match, the backup identity put a
    second version of the archive and its manifest: the drill minion's
    listing says so, and status marks the archive SUSPECT."""
    text = f"TAMPERING: {KEY}.manifest.json has 2 versions"
    rows, table = status(honest_view(), offsite=[dict(OFFSITE[0], error=text, tampered=text)])
    assert table["archive"]["archive_state"] == "SUSPECT", table["archive"]
    assert "was written again off-site: TAMPERING" in table["archive"]["error"], table["archive"]
    assert table["retcode"] != 0


def test_what_status_judges_by_is_not_the_backup_servers_to_say(status):
    view = honest_view()
    del view["servers"]["web1"]
    view.update(exclude=["web1"], status={"grace_seconds": 10**12}, archive_expected=False)
    rows, table = status(view)
    assert rows["web1"]["state"] != "OK", rows["web1"]  # still listed, still judged
    assert table["retcode"] != 0


def test_a_real_run_id_with_a_fresh_time_is_suspect(status):
    view = honest_view()
    view["servers"]["web1"]["last_good"]["started"] = NOW - 1800
    rows, _ = status(view)
    assert rows["web1"]["state"] == "SUSPECT" and "own record has that push" in rows["web1"]["note"], rows["web1"]


def test_an_old_archive_replayed_as_new_is_suspect(status):
    view = honest_view()
    view["archive"]["finished"] = iso(NOW - 3600)
    _, table = status(view)
    assert table["archive"]["archive_state"] == "SUSPECT" and "off-site it landed" in table["archive"]["error"]
    view["archive"].pop("finished")
    _, table = status(view)
    assert table["archive"]["archive_state"] not in ("OK", "NOT CONFIGURED"), table["archive"]
    assert table["retcode"] != 0
